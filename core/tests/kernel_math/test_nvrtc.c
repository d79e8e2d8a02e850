/* test_nvrtc.c -- the shared mathematics compiles as CUDA with NVRTC (no GPU
 * needed): a prelude defining the dialect as OpenMM's CUDA context does
 * (DEVICE __device__, GLOBAL empty, real double or float), then
 * sf_math_kernel_source, then the test cases and a __global__ kernel that
 * calls them, in double and in single precision.  Passes when both compile
 * without an error or a warning; prints NVRTC's log otherwise.
 *
 *   test_kernel_math_nvrtc <kernel_math_cases.h> */
#include "read_file.h"
#include "sf_math_kernel_source.h"

#include <nvrtc.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *prelude_double =
    "#define DEVICE __device__\n"
    "#define GLOBAL\n"
    "#define USE_DOUBLE_PRECISION 1\n"
    "typedef double real;\n";
static const char *prelude_single =
    "#define DEVICE __device__\n"
    "#define GLOBAL\n"
    "typedef float real;\n";
static const char *kernel_text =
    "\nextern \"C\" __global__ void sfmt_kernel(const real *in, real *out, int *written, int n)\n"
    "{\n"
    "    const int i = blockIdx.x * blockDim.x + threadIdx.x;\n"
    "    if (i < n) written[i] = sfmt_case(i, in, out);\n"
    "}\n";


/* 0 when the source compiles cleanly in this precision. */
static int compile(const char *precision, const char *prelude, const char *cases)
{
    const size_t n = strlen(prelude) + sf_math_kernel_source_length + strlen(cases) + strlen(kernel_text) + 1;
    char *source = malloc(n);
    snprintf(source, n, "%s%s%s%s", prelude, sf_math_kernel_source, cases, kernel_text);
    nvrtcProgram program;
    nvrtcResult rc = nvrtcCreateProgram(&program, source, "smoothflow_kernel_math.cu", 0, NULL, NULL);
    if (rc != NVRTC_SUCCESS) {
        fprintf(stderr, "FAIL: nvrtcCreateProgram: %s\n", nvrtcGetErrorString(rc));
        free(source);
        return 1;
    }
    const char *options[] = {"--std=c++17"};
    rc = nvrtcCompileProgram(program, 1, options);
    size_t log_size = 0;
    nvrtcGetProgramLogSize(program, &log_size);
    char *log = malloc(log_size + 1);
    nvrtcGetProgramLog(program, log);
    log[log_size] = 0;
    size_t ptx_size = 0;
    if (rc == NVRTC_SUCCESS) nvrtcGetPTXSize(program, &ptx_size);
    int failed = 0;
    if (rc != NVRTC_SUCCESS) {
        fprintf(stderr, "FAIL: NVRTC cannot compile the kernel source in %s precision (%s):\n%s\n", precision,
                nvrtcGetErrorString(rc), log);
        failed = 1;
    } else if (strstr(log, "warning")) {
        fprintf(stderr, "FAIL: NVRTC warns on the kernel source in %s precision:\n%s\n", precision, log);
        failed = 1;
    } else {
        printf("%s precision: compiled, %zu bytes of PTX\n", precision, ptx_size);
    }
    free(log);
    nvrtcDestroyProgram(&program);
    free(source);
    return failed;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s <kernel_math_cases.h>\n", argv[0]);
        return 2;
    }
    char *cases = kmt_read_file(argv[1], NULL);
    if (!cases) {
        fprintf(stderr, "FAIL: cannot read %s\n", argv[1]);
        return 1;
    }
    int major = 0, minor = 0;
    nvrtcVersion(&major, &minor);
    printf("NVRTC %d.%d\n", major, minor);
    const int failed = compile("double", prelude_double, cases) + compile("single", prelude_single, cases);
    free(cases);
    if (failed) return 1;
    printf("PASS\n");
    return 0;
}
