#include "CublasMatrixProducts.h"
#include "openmm/OpenMMException.h"
#include "openmm/common/ContextSelector.h"
#include "openmm/cuda/CudaArray.h"
#include <cublas_v2.h>
#include <string>

using namespace SmoothFlowPlugin;
using namespace OpenMM;
using namespace std;

namespace {
void check(cublasStatus_t status, const char* what) {
    if (status != CUBLAS_STATUS_SUCCESS)
        throw OpenMMException(string("SmoothFlowForce: cuBLAS ") + what + " failed: " + cublasGetStatusName(status) +
                              " (" + cublasGetStatusString(status) + ")");
}
} // namespace

CublasMatrixProducts::~CublasMatrixProducts() {
    if (handle != nullptr) {
        ContextSelector selector(cu);
        cublasDestroy(handle);
    }
}

string CublasMatrixProducts::name() const {
    int version = 0;
    if (handle != nullptr)
        cublasGetVersion(handle, &version);
    return "cuBLAS" + (version > 0 ? " " + to_string(version) : string());
}

void CublasMatrixProducts::multiply(bool transposeA, int m, int n, int k, ComputeArray& A, size_t offsetA, int lda,
                                    ComputeArray& B, size_t offsetB, int ldb, ComputeArray& C, size_t offsetC, int ldc) {
    // The caller (the kernel's execute) holds a ContextSelector.
    if (handle == nullptr)
        check(cublasCreate(&handle), "cublasCreate");
    // OpenMM may switch streams (e.g. to capture a CUDA graph): follow it.
    check(cublasSetStream(handle, cu.getCurrentStream()), "cublasSetStream");
    const cublasOperation_t op = transposeA ? CUBLAS_OP_T : CUBLAS_OP_N;
    const CUdeviceptr a = cu.unwrap(A.getArray()).getDevicePointer(), b = cu.unwrap(B.getArray()).getDevicePointer();
    const CUdeviceptr c = cu.unwrap(C.getArray()).getDevicePointer();
    if (cu.getUseDoublePrecision()) {
        const double one = 1, zero = 0;
        check(cublasDgemm(handle, op, CUBLAS_OP_N, m, n, k, &one, reinterpret_cast<const double*>(a) + offsetA, lda,
                          reinterpret_cast<const double*>(b) + offsetB, ldb, &zero,
                          reinterpret_cast<double*>(c) + offsetC, ldc),
              "cublasDgemm");
    } else {
        const float one = 1, zero = 0;
        check(cublasSgemm(handle, op, CUBLAS_OP_N, m, n, k, &one, reinterpret_cast<const float*>(a) + offsetA, lda,
                          reinterpret_cast<const float*>(b) + offsetB, ldb, &zero,
                          reinterpret_cast<float*>(c) + offsetC, ldc),
              "cublasSgemm");
    }
}
