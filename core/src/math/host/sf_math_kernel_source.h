/* sf_math_kernel_source.h -- the headers of core/src/math as one string, for
 * the GPU platforms to compile (after their dialect prelude) as OpenCL C or
 * CUDA.  Defined by the file the build generates from those headers
 * (cmake/EncodeKernelSource.cmake), in the static library
 * smoothflow_kernel_source; not part of libsmoothflow's API. */
#ifndef SF_MATH_KERNEL_SOURCE_H
#define SF_MATH_KERNEL_SOURCE_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The concatenated headers, NUL-terminated, and their length in bytes. */
extern const char *const sf_math_kernel_source;
extern const size_t sf_math_kernel_source_length;

#ifdef __cplusplus
}
#endif

#endif /* SF_MATH_KERNEL_SOURCE_H */
