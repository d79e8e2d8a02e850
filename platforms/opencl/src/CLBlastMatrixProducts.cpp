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
    const bool useDouble = cl.getUseDoublePrecision();
    size_t needed = 0;
    clblast::StatusCode status =
        useDouble ? clblast::GemmTempBufferSize<double>(clblast::Layout::kColMajor, op, clblast::Transpose::kNo, m, n, k,
                                                        offsetA, lda, offsetB, ldb, offsetC, ldc, &queue, needed)
                  : clblast::GemmTempBufferSize<float>(clblast::Layout::kColMajor, op, clblast::Transpose::kNo, m, n, k,
                                                       offsetA, lda, offsetB, ldb, offsetC, ldc, &queue, needed);
    // The size is taken as elements, times the element size: enough whether
    // CLBlast counts elements or bytes.
    needed *= useDouble ? sizeof(double) : sizeof(float);
    if (status == clblast::StatusCode::kSuccess && needed > tempBytes) {
        temp = cl::Buffer(cl.getContext(), CL_MEM_READ_WRITE, needed);
        tempBytes = needed;
    }
    // No event: the product is ordered with OpenMM's kernels by the in-order queue.
    if (status == clblast::StatusCode::kSuccess) {
        cl_mem scratch = tempBytes > 0 ? temp() : nullptr;
        if (useDouble)
            status = clblast::Gemm<double>(clblast::Layout::kColMajor, op, clblast::Transpose::kNo, m, n, k, 1.0, a,
                                           offsetA, lda, b, offsetB, ldb, 0.0, c, offsetC, ldc, &queue, nullptr, scratch);
        else
            status = clblast::Gemm<float>(clblast::Layout::kColMajor, op, clblast::Transpose::kNo, m, n, k, 1.0f, a,
                                          offsetA, lda, b, offsetB, ldb, 0.0f, c, offsetC, ldc, &queue, nullptr, scratch);
    }
    if (status != clblast::StatusCode::kSuccess)
        throw OpenMMException("SmoothFlowForce: CLBlast's GEMM failed with status " + to_string((int) status) + " (m " +
                              to_string(m) + ", n " + to_string(n) + ", k " + to_string(k) +
                              "; see clblast.h's StatusCode)");
}
