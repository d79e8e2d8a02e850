/* test_opencl.c -- the shared mathematics compiled as OpenCL C 1.2 from the
 * generated kernel source, run on the first OpenCL device, against the same
 * functions compiled as C on the host.
 *
 *   test_kernel_math_opencl double|single <kernel_math_cases.h>
 *
 * The kernel source is a prelude defining the dialect as OpenMM's OpenCL
 * context does, then sf_math_kernel_source (the headers of core/src/math,
 * byte for byte), then the test cases and a kernel that runs one case per
 * work item.  Double precision must agree with the host to DOUBLE_TOL
 * relative; single precision (real = float, inputs rounded to float on both
 * sides) to SINGLE_TOL.  Each output is compared relative to its scale over
 * the cases (kmt_compare in kernel_math_host.h).  Without an OpenCL device the test fails, unless
 * SMOOTHFLOW_ALLOW_NO_OPENCL=1, when it is skipped (exit 77). */
#define CL_TARGET_OPENCL_VERSION 120
#include <CL/cl.h>

#include "kernel_math_host.h"
#include "sf_math_kernel_source.h"

#include <string.h>

#define N_CASES 256
/* Relative tolerances (docs/kernel-math.md).  Double: the device's libm
 * and FMA contraction against glibc's, a few ulps through each chain of
 * operations (PoCL: ~2e-14).  Single: float rounding (eps 1.2e-7) amplified
 * by the Newton inverse and the adjoints (PoCL: ~3e-5). */
#define DOUBLE_TOL 1e-12
#define SINGLE_TOL 1e-4

static const char *prelude_double =
    "#pragma OPENCL EXTENSION cl_khr_fp64 : enable\n"
    "#define DEVICE\n"
    "#define GLOBAL __global\n"
    "#define USE_DOUBLE_PRECISION 1\n"
    "typedef double real;\n";
static const char *prelude_single =
    "#define DEVICE\n"
    "#define GLOBAL __global\n"
    "typedef float real;\n";
static const char *kernel_text =
    "\n__kernel void sfmt_kernel(__global const real *in, __global real *out, __global int *written, int n)\n"
    "{\n"
    "    const int i = get_global_id(0);\n"
    "    if (i < n) written[i] = sfmt_case(i, in, out);\n"
    "}\n";

static int no_device(const char *why)
{
    const char *allow = getenv("SMOOTHFLOW_ALLOW_NO_OPENCL");
    if (allow && strcmp(allow, "1") == 0) {
        printf("SKIP: %s (SMOOTHFLOW_ALLOW_NO_OPENCL=1)\n", why);
        return 77;
    }
    fprintf(stderr,
            "FAIL: %s.  This test runs the kernel mathematics on an OpenCL device (on Debian: apt-get install "
            "pocl-opencl-icd); set SMOOTHFLOW_ALLOW_NO_OPENCL=1 to skip it where none exists.\n", why);
    return 1;
}

#define CHECK_CL(call, what)                                                   \
    do {                                                                       \
        cl_int rc_ = (call);                                                   \
        if (rc_ != CL_SUCCESS) {                                               \
            fprintf(stderr, "FAIL: %s returned OpenCL error %d\n", what, rc_); \
            return 1;                                                          \
        }                                                                      \
    } while (0)

int main(int argc, char **argv)
{
    if (argc != 3 || (strcmp(argv[1], "double") && strcmp(argv[1], "single"))) {
        fprintf(stderr, "usage: %s double|single <kernel_math_cases.h>\n", argv[0]);
        return 2;
    }
    const int dbl = strcmp(argv[1], "double") == 0;

    /* The first device of the first platform that has one. */
    cl_platform_id platforms[16];
    cl_uint n_platforms = 0;
    if (clGetPlatformIDs(16, platforms, &n_platforms) != CL_SUCCESS || n_platforms == 0)
        return no_device("no OpenCL platform found");
    cl_device_id device = 0;
    cl_platform_id platform = 0;
    for (cl_uint p = 0; p < n_platforms && !device; p++) {
        cl_uint n = 0;
        if (clGetDeviceIDs(platforms[p], CL_DEVICE_TYPE_ALL, 1, &device, &n) != CL_SUCCESS || n == 0) device = 0;
        else platform = platforms[p];
    }
    if (!device) return no_device("OpenCL platforms found, but no device");
    char platform_name[256] = "", device_name[256] = "", version[256] = "";
    clGetPlatformInfo(platform, CL_PLATFORM_NAME, sizeof platform_name, platform_name, NULL);
    clGetDeviceInfo(device, CL_DEVICE_NAME, sizeof device_name, device_name, NULL);
    clGetDeviceInfo(device, CL_DEVICE_VERSION, sizeof version, version, NULL);
    printf("OpenCL device: %s (%s; platform %s), %s precision\n", device_name, version, platform_name, argv[1]);
    if (dbl) {
        cl_device_fp_config fp64 = 0;
        clGetDeviceInfo(device, CL_DEVICE_DOUBLE_FP_CONFIG, sizeof fp64, &fp64, NULL);
        if (!fp64) {
            fprintf(stderr, "FAIL: the device %s has no double precision (cl_khr_fp64)\n", device_name);
            return 1;
        }
    }

    /* The kernel source: prelude + the generated text + cases + kernel. */
    size_t cases_length;
    char *cases = kmt_read_file(argv[2], &cases_length);
    if (!cases) return 1;
    const char *prelude = dbl ? prelude_double : prelude_single;
    const char *parts[4] = {prelude, sf_math_kernel_source, cases, kernel_text};
    const size_t lengths[4] = {strlen(prelude), sf_math_kernel_source_length, cases_length, strlen(kernel_text)};

    cl_int rc;
    cl_context context = clCreateContext(NULL, 1, &device, NULL, NULL, &rc);
    CHECK_CL(rc, "clCreateContext");
    cl_command_queue queue = clCreateCommandQueue(context, device, 0, &rc);
    CHECK_CL(rc, "clCreateCommandQueue");
    cl_program program = clCreateProgramWithSource(context, 4, parts, lengths, &rc);
    CHECK_CL(rc, "clCreateProgramWithSource");
    /* OpenCL C 1.2, warnings as errors: e.g. a double literal in single precision. */
    rc = clBuildProgram(program, 1, &device, "-cl-std=CL1.2 -Werror", NULL, NULL);
    if (rc != CL_SUCCESS) {
        size_t log_size = 0;
        clGetProgramBuildInfo(program, device, CL_PROGRAM_BUILD_LOG, 0, NULL, &log_size);
        char *log = malloc(log_size + 1);
        clGetProgramBuildInfo(program, device, CL_PROGRAM_BUILD_LOG, log_size, log, NULL);
        log[log_size] = 0;
        fprintf(stderr, "FAIL: the kernel source does not build as OpenCL C 1.2 (%s precision), error %d:\n%s\n",
                argv[1], rc, log);
        return 1;
    }
    cl_kernel kernel = clCreateKernel(program, "sfmt_kernel", &rc);
    CHECK_CL(rc, "clCreateKernel");

    /* Inputs (rounded to float in single precision, for both sides). */
    static double in[N_CASES * SFMT_NIN], want[N_CASES * SFMT_NOUT], got[N_CASES * SFMT_NOUT];
    static float in_f[N_CASES * SFMT_NIN], got_f[N_CASES * SFMT_NOUT];
    kmt_inputs(N_CASES, in);
    if (!dbl)
        for (int k = 0; k < N_CASES * SFMT_NIN; k++) in[k] = in_f[k] = (float)in[k];
    if (!kmt_reference(N_CASES, in, want)) return 1;

    const size_t real_size = dbl ? sizeof(double) : sizeof(float);
    cl_mem in_buf = clCreateBuffer(context, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, real_size * N_CASES * SFMT_NIN,
                                   dbl ? (void *)in : (void *)in_f, &rc);
    CHECK_CL(rc, "clCreateBuffer(in)");
    cl_mem out_buf = clCreateBuffer(context, CL_MEM_WRITE_ONLY, real_size * N_CASES * SFMT_NOUT, NULL, &rc);
    CHECK_CL(rc, "clCreateBuffer(out)");
    cl_mem count_buf = clCreateBuffer(context, CL_MEM_WRITE_ONLY, sizeof(int) * N_CASES, NULL, &rc);
    CHECK_CL(rc, "clCreateBuffer(written)");
    const int n = N_CASES;
    CHECK_CL(clSetKernelArg(kernel, 0, sizeof in_buf, &in_buf), "clSetKernelArg");
    CHECK_CL(clSetKernelArg(kernel, 1, sizeof out_buf, &out_buf), "clSetKernelArg");
    CHECK_CL(clSetKernelArg(kernel, 2, sizeof count_buf, &count_buf), "clSetKernelArg");
    CHECK_CL(clSetKernelArg(kernel, 3, sizeof n, &n), "clSetKernelArg");
    const size_t global = N_CASES;
    CHECK_CL(clEnqueueNDRangeKernel(queue, kernel, 1, NULL, &global, NULL, 0, NULL, NULL), "clEnqueueNDRangeKernel");
    int written[N_CASES];
    CHECK_CL(clEnqueueReadBuffer(queue, out_buf, CL_TRUE, 0, real_size * N_CASES * SFMT_NOUT,
                                 dbl ? (void *)got : (void *)got_f, 0, NULL, NULL),
             "clEnqueueReadBuffer(out)");
    CHECK_CL(clEnqueueReadBuffer(queue, count_buf, CL_TRUE, 0, sizeof written, written, 0, NULL, NULL),
             "clEnqueueReadBuffer(written)");
    for (int i = 0; i < N_CASES; i++)
        if (written[i] != SFMT_NOUT) {
            fprintf(stderr, "FAIL: case %d wrote %d outputs on the device, %d on the host\n", i, written[i], SFMT_NOUT);
            return 1;
        }
    if (!dbl)
        for (int k = 0; k < N_CASES * SFMT_NOUT; k++) got[k] = got_f[k];

    int worst;
    const double tol = dbl ? DOUBLE_TOL : SINGLE_TOL;
    const double rel = kmt_compare(N_CASES, want, got, &worst);
    printf("%d cases x %d outputs: largest relative difference %.3g (tolerance %.0e)", N_CASES, SFMT_NOUT, rel, tol);
    if (worst >= 0)
        printf(" at case %d output %d: host %.17g, device %.17g", worst / SFMT_NOUT, worst % SFMT_NOUT, want[worst],
               got[worst]);
    printf("\n");

    clReleaseMemObject(in_buf);
    clReleaseMemObject(out_buf);
    clReleaseMemObject(count_buf);
    clReleaseKernel(kernel);
    clReleaseProgram(program);
    clReleaseCommandQueue(queue);
    clReleaseContext(context);
    free(cases);
    if (!(rel <= tol)) {
        fprintf(stderr, "FAIL: the device's %s-precision results differ from the host's by more than %.0e\n", argv[1],
                tol);
        return 1;
    }
    printf("PASS\n");
    return 0;
}
