#ifndef SMOOTHFLOW_CLBLAST_MATRIX_PRODUCTS_H_
#define SMOOTHFLOW_CLBLAST_MATRIX_PRODUCTS_H_

#include "SmoothFlowMatrixProducts.h"
#include "openmm/opencl/OpenCLContext.h"

namespace SmoothFlowPlugin {

/** The batched path's matrix products on OpenCL: CLBlast's GEMM on the context's queue. */
class CLBlastMatrixProducts : public SmoothFlowMatrixProducts {
public:
    explicit CLBlastMatrixProducts(OpenMM::OpenCLContext& cl) : cl(cl) {
    }
    std::string name() const override;
    void multiply(bool transposeA, int m, int n, int k, OpenMM::ComputeArray& A, size_t offsetA, int lda,
                  OpenMM::ComputeArray& B, size_t offsetB, int ldb, OpenMM::ComputeArray& C, size_t offsetC,
                  int ldc) override;
private:
    OpenMM::OpenCLContext& cl;
};

} // namespace SmoothFlowPlugin

#endif /*SMOOTHFLOW_CLBLAST_MATRIX_PRODUCTS_H_*/
