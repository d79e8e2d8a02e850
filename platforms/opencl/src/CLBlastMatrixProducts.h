#ifndef SMOOTHFLOW_CLBLAST_MATRIX_PRODUCTS_H_
#define SMOOTHFLOW_CLBLAST_MATRIX_PRODUCTS_H_

#include "SmoothFlowMatrixProducts.h"
#include "openmm/opencl/OpenCLContext.h"

namespace SmoothFlowPlugin {

/**
 * The batched path's matrix products on OpenCL: CLBlast's GEMM on the
 * context's queue.  CLBlast pads and copies matrices whose shape or offsets
 * its fast kernel cannot take, into a temporary buffer it would otherwise
 * allocate at every call: one buffer is kept here instead, grown as needed.
 */
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
    cl::Buffer temp;
    size_t tempBytes = 0;
};

} // namespace SmoothFlowPlugin

#endif /*SMOOTHFLOW_CLBLAST_MATRIX_PRODUCTS_H_*/
