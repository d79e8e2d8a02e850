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
 * components or bins, the C core's bound on K): the fused adjoint of the
 * smooth transform its ramps, the spline view its softmax values. */
#define SFM_SMOOTH_RAMP_CACHE 64
#define SFM_SPLINE_CACHE 64

#include "../sf_math_common.h"
#include "../sf_math_smooth.h"
#include "../sf_math_spline.h"
#include "../sf_math_affine.h"
#include "../sf_math_geometry.h"
#include "../sf_math_energy.h"
#include "../sf_math_flow.h"
#include "../sf_math_mlp.h"

#endif /* SF_MATH_HOST_H */
