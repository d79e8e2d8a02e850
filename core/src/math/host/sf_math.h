/* sf_math.h -- the headers of core/src/math compiled as C11 on the host: the
 * dialect of docs/kernel-math.md in double precision, then every header in
 * the order of the kernel source (SMOOTHFLOW_KERNEL_MATH_HEADERS in
 * core/CMakeLists.txt; the test kernel_math.same_text checks the two lists
 * agree).  Included by the C core (sf_internal.h) and by the host side of the
 * kernel tests; not itself part of the kernel source. */
#ifndef SF_MATH_HOST_H
#define SF_MATH_HOST_H

#include <math.h>

#define DEVICE static inline
#define GLOBAL
#define USE_DOUBLE_PRECISION 1
typedef double real;

/* The CPU keeps on the stack what a kernel recomputes (up to this many
 * bins, the C core's bound on K): the spline view its softmax values. */
#define SFM_SPLINE_CACHE 64

/* Loops over a transform's K components run as vectors (K = 8 doubles are
 * one AVX-512 register): OpenMP SIMD pragmas where the build compiles with
 * -fopenmp-simd (core/CMakeLists.txt defines SF_OPENMP_SIMD); otherwise the
 * plain loops of sf_math_common.h. */
#ifdef SF_OPENMP_SIMD
#define SFM_PRAGMA(x) _Pragma(#x)
#define SFM_SIMD SFM_PRAGMA(omp simd)
#define SFM_SIMD_SUM(...) SFM_PRAGMA(omp simd reduction(+ : __VA_ARGS__))
#endif

/* glibc's libmvec (2.35 and later) has vector versions of the functions the
 * loops call; declaring them lets GCC's vectorizer call those instead of the
 * scalar functions lane by lane.  glibc declares them itself only under
 * -ffast-math, which the core does not use (it checks every result for
 * finiteness).  libmvec's results are within 4 ulp of the scalar functions. */
#if defined(SF_USE_LIBMVEC) && defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && \
    defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 35)) && !defined(__FAST_MATH__)
__attribute__((simd("notinbranch"))) double exp(double);
__attribute__((simd("notinbranch"))) double expm1(double);
__attribute__((simd("notinbranch"))) double log1p(double);
__attribute__((simd("notinbranch"))) double tanh(double);
#endif

#include "../sf_math_common.h"
#include "../sf_math_smooth.h"
#include "../sf_math_spline.h"
#include "../sf_math_affine.h"
#include "../sf_math_geometry.h"
#include "../sf_math_energy.h"
#include "../sf_math_flow.h"
#include "../sf_math_mlp.h"

#endif /* SF_MATH_HOST_H */
