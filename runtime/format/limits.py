"""Hard limits of the .adt format (FORMAT.md, "Limits"). A reader rejects anything beyond them."""

MAGIC = b"ADT\x1a"
MAJOR_VERSION = 2                    # the newest major version this reader implements (FORMAT.md §13)
MINOR_VERSION = 0
READ_MAJORS = (1, 2)                 # every major version this reader implements; others: AdtVersionError
BASE_MAJOR = 1                       # what the writer writes when nothing needs more, so 1.x readers keep working
TT_MIN_MAJOR = 2                     # parameter encoding 2 (tensor train) exists from this major version on

MAX_SECTIONS = 16
MAX_SECTION_BYTES = 1 << 26          # any non-payload section: 64 MiB
MAX_PAYLOAD_BYTES = 1 << 32          # 4 GiB of coded bits
MAX_VARINT_BYTES = 9                 # values < 2**63
MAX_ORDER = 8                        # ndim of a shape, order of a Tucker core, cores of a tensor train
MAX_DIM = (1 << 31) - 1
MAX_TENSOR_ELEMENTS = 1 << 28        # dense elements of one parameter (1 GiB of float32)
MAX_TOTAL_ELEMENTS = 1 << 30         # dense elements of all parameters together
MAX_NAME_BYTES = 255
MAX_META_ENTRIES = 256
MAX_META_KEY_BYTES = 64
MAX_META_VALUE_BYTES = 65535
MAX_ARCH_BYTES = 1 << 26             # decompressed architecture: 64 MiB (inflated in 1 MiB steps, never past
                                     # the declared size; the ONNX parser then caps its counts:
                                     # adt.runtime.onnx_proto.ParseLimits)
MAX_DEFLATE_RATIO = 1032             # no DEFLATE stream expands more than this (zlib FAQ)
MAX_TABLES = 256
MAX_GROUPS = 4096
MAX_CORES = 4096
MAX_PARAMS = 65535
MAX_Q = 65536                        # symbols are 0..Q-1 and fit in 16 bits
MAX_CODE_LENGTH = 24
MAX_EG_LEADING_ZEROS = 15            # Exp-Golomb codes in a code table are <= 31 bits
