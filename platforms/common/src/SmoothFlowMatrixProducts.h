#ifndef SMOOTHFLOW_MATRIX_PRODUCTS_H_
#define SMOOTHFLOW_MATRIX_PRODUCTS_H_

#include "openmm/common/ComputeArray.h"
#include <cstddef>
#include <string>

namespace SmoothFlowPlugin {

/**
 * The one matrix product the batched path needs, from the platform's BLAS
 * (cuBLAS on CUDA, CLBlast on OpenCL): C = op(A) B in column-major storage,
 * with op(A) = A or A^T, alpha 1 and beta 0.  Offsets and leading
 * dimensions are in elements of the arrays' type, which is the context's
 * `real` (float in single and mixed precision, double in double).  The
 * product is queued on the context's current queue or stream, in order with
 * OpenMM's own kernels; nothing waits for it.
 *
 * The batched path uses it with the molecules as the columns: each
 * molecule's slice of the kernel's scratch array is one column, so the
 * leading dimension of B and C is the slice's stride
 * (CommonSmoothFlowKernels.cpp, docs/gpu-platforms.md).
 */
class SmoothFlowMatrixProducts {
public:
    virtual ~SmoothFlowMatrixProducts() = default;
    /** The library's name and version, for messages and benchmark records. */
    virtual std::string name() const = 0;
    virtual void multiply(bool transposeA, int m, int n, int k, OpenMM::ComputeArray& A, size_t offsetA, int lda,
                          OpenMM::ComputeArray& B, size_t offsetB, int ldb, OpenMM::ComputeArray& C, size_t offsetC,
                          int ldc) = 0;
};

} // namespace SmoothFlowPlugin

#endif /*SMOOTHFLOW_MATRIX_PRODUCTS_H_*/
