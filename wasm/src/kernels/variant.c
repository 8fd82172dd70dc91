/* Which SIMD variant the kernels were compiled as. */
#include "../kernels.h"
#include "../simd.h"

const char* spnn_kernels_variant(void) { return SPNN_KERNELS_VARIANT; }
