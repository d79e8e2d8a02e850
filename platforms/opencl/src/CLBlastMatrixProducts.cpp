#include "CLBlastMatrixProducts.h"
#include "openmm/OpenMMException.h"
#include "openmm/opencl/OpenCLArray.h"
#include <clblast.h>
#include <string>

using namespace SmoothFlowPlugin;
using namespace OpenMM;
using namespace std;

string CLBlastMatrixProducts::name() const {
    return "CLBlast";
}

void CLBlastMatrixProducts::multiply(bool transposeA, int m, int n, int k, ComputeArray& A, size_t offsetA, int lda,
                                     ComputeArray& B, size_t offsetB, int ldb, ComputeArray& C, size_t offsetC, int ldc) {
    cl_mem a = cl.unwrap(A.getArray()).getDeviceBuffer()(), b = cl.unwrap(B.getArray()).getDeviceBuffer()();
    cl_mem c = cl.unwrap(C.getArray()).getDeviceBuffer()();
    cl_command_queue queue = cl.getQueue()();
    const clblast::Transpose op = transposeA ? clblast::Transpose::kYes : clblast::Transpose::kNo;
    clblast::StatusCode status;
    // No event: the product is ordered with OpenMM's kernels by the in-order queue.
    if (cl.getUseDoublePrecision())
        status = clblast::Gemm<double>(clblast::Layout::kColMajor, op, clblast::Transpose::kNo, m, n, k, 1.0, a, offsetA,
                                       lda, b, offsetB, ldb, 0.0, c, offsetC, ldc, &queue);
    else
        status = clblast::Gemm<float>(clblast::Layout::kColMajor, op, clblast::Transpose::kNo, m, n, k, 1.0f, a, offsetA,
                                      lda, b, offsetB, ldb, 0.0f, c, offsetC, ldc, &queue);
    if (status != clblast::StatusCode::kSuccess)
        throw OpenMMException("SmoothFlowForce: CLBlast's GEMM failed with status " + to_string((int) status) + " (m " +
                              to_string(m) + ", n " + to_string(n) + ", k " + to_string(k) +
                              "; see clblast.h's StatusCode)");
}
