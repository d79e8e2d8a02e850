#ifndef SMOOTHFLOW_CUBLAS_MATRIX_PRODUCTS_H_
#define SMOOTHFLOW_CUBLAS_MATRIX_PRODUCTS_H_

#include "SmoothFlowMatrixProducts.h"
#include "openmm/cuda/CudaContext.h"

struct cublasContext;

namespace SmoothFlowPlugin {

/**
 * The batched path's matrix products on CUDA: cuBLAS's GEMM on the stream
 * the context is using.  The handle is made at the first product, with the
 * context current (cuBLAS works in whatever CUDA context is current), and
 * freed with this object.
 */
class CublasMatrixProducts : public SmoothFlowMatrixProducts {
public:
    explicit CublasMatrixProducts(OpenMM::CudaContext& cu) : cu(cu) {
    }
    ~CublasMatrixProducts() override;
    std::string name() const override;
    void multiply(bool transposeA, int m, int n, int k, OpenMM::ComputeArray& A, size_t offsetA, int lda,
                  OpenMM::ComputeArray& B, size_t offsetB, int ldb, OpenMM::ComputeArray& C, size_t offsetC,
                  int ldc) override;
private:
    OpenMM::CudaContext& cu;
    cublasContext* handle = nullptr;
};

} // namespace SmoothFlowPlugin

#endif /*SMOOTHFLOW_CUBLAS_MATRIX_PRODUCTS_H_*/
