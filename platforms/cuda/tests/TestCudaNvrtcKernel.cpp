/*
 * The CUDA platform's SmoothFlow program compiles with NVRTC exactly as
 * OpenMM's CUDA platform would compile it on a GPU, without one.
 *
 * CudaContext::compileProgram(source, defines) hands NVRTC, with the options
 * "-arch=compute_<arch> --use_fast_math":
 *
 *   // Compilation Options: --use_fast_math
 *   #define <each of the context's own defines not overridden by `defines`>
 *   typedefs of real, real2-4, mixed, mixed2-4 (by precision) and tileflags
 *   CudaKernelSources::common          (the dialect: KERNEL, GLOBAL, ATOMIC_ADD, ...)
 *   #define <each of `defines`>
 *   CudaKernelSources::vectorOps + source
 *
 * The two kernel sources are read out of the very libOpenMMCUDA.so the
 * plugin links; the context's defines are set in CudaContext's constructor,
 * which needs a device, so cudaContextDefines below restates them (OpenMM
 * 8.6, a driver of CUDA 9 or later).  `source` and `defines` come from the
 * plugin library, as CommonCalcSmoothFlowForceKernel passes them
 * (commonSmoothFlowProgramSource, commonSmoothFlowProgramDefines).  NVRTC is
 * the one libOpenMMCUDA loads (the wheels' nvidia/cu13/lib), found through
 * the library's handle.  The test links the plugin, so it starts only where
 * libcuda.so.1 is found: the driver, or the toolkit's stub of it, which
 * CMake puts on LD_LIBRARY_PATH on a machine without a driver.
 *
 * For each model given, each precision (single, mixed, double) and with and
 * without periodic boundaries, the fused program must compile and its PTX
 * hold computeSmoothFlow and sumSmoothFlowEnergy; so must the batched path's
 * program (BATCHED_STAGES 1, not periodic) with computeSmoothFlowStage; and
 * NVRTC must not warn on the plugin's part of the text
 * (OpenMM's own prelude draws warnings under CUDA 13; they are counted).
 * Models of one shape (N, layer count, support policy, prior) give the same
 * text, which is compiled once.  The free-form kind's program
 * (commonFreeFormProgramSource, kernels/free_form.cc) is compiled the same way
 * for two shapes, DW4-like (4 particles in 2 dimensions, 3 layers) and
 * LJ13-like (13 in 3, 2 layers), in each precision: its PTX must hold
 * computeFreeForm and sumFreeFormEnergy, and NVRTC must not warn on it.  And since the context compiles with
 * --use_fast_math, the kernel's finiteness test (sf_finite) must survive it:
 * a probe kernel that returns sf_finite(x) must still compare x, not return a
 * constant.
 *
 *   TestCudaNvrtcKernel <libOpenMMCUDA.so> <arch> <model.safetensors>...
 */
#include "CommonFreeFormKernel.h"
#include "CommonSmoothFlowKernels.h"
#include "smoothflow.h"
#include <nvrtc.h>
#include <dlfcn.h>
#include <algorithm>
#include <cctype>
#include <chrono>
#include <iostream>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

using namespace SmoothFlowPlugin;
using namespace std;

namespace {

enum Precision { kSingle, kMixed, kDouble };
const char* const kPrecisionName[] = {"single", "mixed", "double"};

/* CudaContext's compilationDefines (OpenMM 8.6, platforms/cuda/src/CudaContext.cpp), by precision.
 * The periodic-box macros are those of a rectangular box; the kernel uses none
 * of the function-like macros (checked in main), so only their names matter. */
map<string, string> cudaContextDefines(Precision precision) {
    map<string, string> d;
    d["SYNC_WARPS"] = "__syncwarp();";
    d["SHFL(var, srcLane)"] = "__shfl_sync(0xffffffff, var, srcLane);";
    d["BALLOT(var)"] = "__ballot_sync(0xffffffff, var);";
    const string realVector = precision == kDouble ? "make_double" : "make_float";
    const string mixedVector = precision == kSingle ? "make_float" : "make_double";
    for (const char* n : {"2", "3", "4"}) {
        d[string("make_real") + n] = realVector + n;
        d[string("make_mixed") + n] = mixedVector + n;
    }
    if (precision == kDouble)
        d["USE_DOUBLE_PRECISION"] = "1";
    if (precision == kMixed)
        d["USE_MIXED_PRECISION"] = "1";
    // The math macros name the double function in double precision, else the float one.
    const bool dbl = precision == kDouble;
    for (const char* f : {"sqrt", "rsqrt", "exp", "log", "pow", "cos", "sin", "tan", "acos", "asin", "atan", "erf",
                          "erfc", "fma", "fabs"}) {
        string name(f);
        for (char& c : name)
            c = toupper(c);
        d[name] = dbl ? string(f) : string(f) + "f";
    }
    d["RECIP"] = dbl ? "1.0/" : "1.0f/";
    const string wrapDelta = "floor(delta.C*invPeriodicBoxSize.C+0.5f)*periodicBoxSize.C";
    auto perAxis = [](string pattern, const string& target) {
        string body = "{";
        for (const char* c : {"x", "y", "z"}) {
            string line = pattern;
            for (size_t at; (at = line.find(".C")) != string::npos;)
                line.replace(at, 2, string(".") + c);
            body += target + "." + c + " -= " + line + "; \\\n";
        }
        body.erase(body.size() - 4);
        return body + ";}";
    };
    d["APPLY_PERIODIC_TO_DELTA(delta)"] = perAxis(wrapDelta, "delta");
    d["APPLY_PERIODIC_TO_POS(pos)"] = perAxis("floor(pos.C*invPeriodicBoxSize.C)*periodicBoxSize.C", "pos");
    d["APPLY_PERIODIC_TO_POS_WITH_CENTER(pos, center)"] =
        perAxis("floor((pos.C-center.C)*invPeriodicBoxSize.C+0.5f)*periodicBoxSize.C", "pos");
    return d;
}

/* The text CudaContext::createModule compiles for compileProgram(source, defines). */
string cudaProgramText(Precision precision, const string& common, const string& vectorOps, const string& source,
                       const map<string, string>& defines) {
    string text = "// Compilation Options: --use_fast_math\n\n";
    const map<string, string> context = cudaContextDefines(precision);
    for (const auto& define : context)
        if (defines.find(define.first) == defines.end())
            text += "#define " + define.first + (define.second.empty() ? "" : " " + define.second) + "\n";
    text += "\n";
    const string realType = precision == kDouble ? "double" : "float";
    const string mixedType = precision == kSingle ? "float" : "double";
    text += "typedef " + realType + " real;\n";
    for (const char* n : {"2", "3", "4"})
        text += "typedef " + realType + n + " real" + n + ";\n";
    text += "typedef " + mixedType + " mixed;\n";
    for (const char* n : {"2", "3", "4"})
        text += "typedef " + mixedType + n + " mixed" + n + ";\n";
    text += "typedef unsigned int tileflags;\n";
    text += common + "\n";
    for (const auto& define : defines)
        text += "#define " + define.first + (define.second.empty() ? "" : " " + define.second) + "\n";
    if (!defines.empty())
        text += "\n";
    return text + vectorOps + source + "\n";
}

/* NVRTC as libOpenMMCUDA links it. */
struct Nvrtc {
    decltype(&nvrtcVersion) version;
    decltype(&nvrtcCreateProgram) create;
    decltype(&nvrtcCompileProgram) compile;
    decltype(&nvrtcGetProgramLogSize) logSize;
    decltype(&nvrtcGetProgramLog) log;
    decltype(&nvrtcGetPTXSize) ptxSize;
    decltype(&nvrtcGetPTX) ptx;
    decltype(&nvrtcDestroyProgram) destroy;
    decltype(&nvrtcGetErrorString) errorString;
};

template <class F>
void bind(void* library, const char* name, F& f) {
    f = reinterpret_cast<F>(dlsym(library, name));
    if (!f)
        throw runtime_error(string("NVRTC function ") + name + " not found through libOpenMMCUDA");
}

struct Compiled {
    bool ok;
    string log, ptx;
    double seconds;
};

Compiled compile(const Nvrtc& nvrtc, const string& text, const string& arch) {
    const auto start = chrono::steady_clock::now();
    nvrtcProgram program;
    nvrtcResult rc = nvrtc.create(&program, text.c_str(), nullptr, 0, nullptr, nullptr);
    if (rc != NVRTC_SUCCESS)
        throw runtime_error(string("nvrtcCreateProgram: ") + nvrtc.errorString(rc));
    const string archOption = "-arch=compute_" + arch;
    const char* options[] = {archOption.c_str(), "--use_fast_math"};
    rc = nvrtc.compile(program, 2, options);
    Compiled result;
    result.ok = rc == NVRTC_SUCCESS;
    size_t size = 0;
    nvrtc.logSize(program, &size);
    result.log.assign(size, '\0');
    nvrtc.log(program, &result.log[0]);
    result.log.resize(result.log.find('\0') == string::npos ? size : result.log.find('\0'));
    if (result.ok) {
        nvrtc.ptxSize(program, &size);
        result.ptx.assign(size, '\0');
        nvrtc.ptx(program, &result.ptx[0]);
    }
    nvrtc.destroy(&program);
    result.seconds = chrono::duration<double>(chrono::steady_clock::now() - start).count();
    return result;
}

/* The body of PTX entry `name`, or "" when there is none. */
string entryBody(const string& ptx, const string& name) {
    const size_t at = ptx.find(".entry " + name + "(");
    if (at == string::npos)
        return "";
    const size_t open = ptx.find('{', at);
    const size_t close = ptx.find("\n}", open);
    return open == string::npos || close == string::npos ? "" : ptx.substr(open, close - open);
}

/* NVRTC's warnings ("default_program(<line>): warning ...") on lines from firstLine on, and how many before it. */
vector<string> warningsFrom(const string& log, int firstLine, int& before) {
    vector<string> found;
    before = 0;
    const string tag = "default_program(";
    for (size_t at = log.find(tag); at != string::npos; at = log.find(tag, at + 1)) {
        const size_t close = log.find(')', at);
        if (close == string::npos || log.compare(close, 11, "): warning ") != 0)
            continue;
        const int line = stoi(log.substr(at + tag.size(), close - at - tag.size()));
        const size_t end = log.find('\n', close);
        if (line >= firstLine)
            found.push_back(log.substr(at, end == string::npos ? string::npos : end - at));
        else
            before++;
    }
    return found;
}

const char* transformName(int kind) {
    return kind == SF_TRANSFORM_SMOOTH ? "smooth" : kind == SF_TRANSFORM_SPLINE ? "spline" : "affine";
}

/* The finiteness probe: sf_finite of kernels/smoothflow.cc, which every error check uses. */
const char* const kProbe =
    "\nKERNEL void sfProbeFinite(GLOBAL const real *RESTRICT x, GLOBAL int *RESTRICT finite)\n"
    "{\n"
    "    finite[GLOBAL_ID] = sf_finite(x[GLOBAL_ID]);\n"
    "}\n";

// Prints the compiled program's size and warnings; the warnings in the plugin's own source (the
// text after OpenMM's prelude and vectorOps) fail, those in the prelude are counted in
// openmmWarnings.  Returns the failures (0 or 1).
int checkWarnings(const Compiled& result, const string& text, const string& source, const string& label,
                  int& openmmWarnings) {
    const size_t ownStart = text.size() - source.size() - 1;
    const int firstOwnLine = 1 + (int) count(text.begin(), text.begin() + ownStart, '\n');
    openmmWarnings = 0;
    const vector<string> own = warningsFrom(result.log, firstOwnLine, openmmWarnings);
    cout << "  " << label << ": compiled, " << result.ptx.size() << " bytes of PTX, " << result.seconds
         << " s; NVRTC warnings: " << own.size() << " in the plugin's source, " << openmmWarnings
         << " in OpenMM's prelude" << endl;
    for (const string& warning : own)
        cout << "    FAIL: " << warning << endl;
    return own.empty() ? 0 : 1;
}

} // namespace

int main(int argc, char** argv) {
    if (argc < 4) {
        cerr << "usage: " << argv[0] << " <libOpenMMCUDA.so> <arch> <model.safetensors>..." << endl;
        return 2;
    }
    const string openmmCuda = argv[1], arch = argv[2];
    const int firstModel = 3;
    int failures = 0;
    string openmmNote;  // the first of the warnings NVRTC gives on OpenMM's prelude
    try {
        // Already loaded (the plugin links it): this gives its handle.
        void* library = dlopen(openmmCuda.c_str(), RTLD_NOW | RTLD_LOCAL);
        if (!library)
            throw runtime_error("OpenMM's CUDA platform does not load: " + string(dlerror()));
        // OpenMM::CudaKernelSources::common and ::vectorOps (std::string, C++11 ABI).
        const string* common = (const string*) dlsym(library, "_ZN6OpenMM17CudaKernelSources6commonB5cxx11E");
        const string* vectorOps = (const string*) dlsym(library, "_ZN6OpenMM17CudaKernelSources9vectorOpsB5cxx11E");
        if (!common || !vectorOps || common->find("#define KERNEL") == string::npos)
            throw runtime_error(openmmCuda + " lacks CudaKernelSources::common or ::vectorOps");
        Nvrtc nvrtc;
        bind(library, "nvrtcVersion", nvrtc.version);
        bind(library, "nvrtcCreateProgram", nvrtc.create);
        bind(library, "nvrtcCompileProgram", nvrtc.compile);
        bind(library, "nvrtcGetProgramLogSize", nvrtc.logSize);
        bind(library, "nvrtcGetProgramLog", nvrtc.log);
        bind(library, "nvrtcGetPTXSize", nvrtc.ptxSize);
        bind(library, "nvrtcGetPTX", nvrtc.ptx);
        bind(library, "nvrtcDestroyProgram", nvrtc.destroy);
        bind(library, "nvrtcGetErrorString", nvrtc.errorString);
        int major = 0, minor = 0;
        nvrtc.version(&major, &minor);
        Dl_info driver{}, where{};
        dladdr(dlsym(library, "cuInit"), &driver);
        dladdr((void*) nvrtc.compile, &where);
        cout << "CUDA driver: " << (driver.dli_fname ? driver.dli_fname : "?") << "\nNVRTC " << major << "." << minor
             << " (" << where.dli_fname << "), -arch=compute_" << arch << " --use_fast_math" << endl;

        const string source = commonSmoothFlowProgramSource();
        // The context's function-like macros are restated by name only (cudaContextDefines).
        for (const char* name : {"APPLY_PERIODIC_TO_", "SHFL(", "BALLOT("})
            if (source.find(name) != string::npos)
                throw runtime_error(string("the kernel source uses ") + name +
                                    ", whose CUDA definition this test does not restate exactly");
        const int workGroupSize = commonSmoothFlowWorkGroupSize(false, 1024);
        map<string, string> compiled;  // program text -> the first model and precision that compiled it

        for (int m = firstModel; m < argc; m++) {
            sf_model* model = nullptr;
            sf_error error{};
            if (sf_model_load_file(argv[m], &model, &error) != SF_OK)
                throw runtime_error(string("cannot load ") + argv[m] + ": " + error.message);
            sf_model_description info;
            sf_model_describe(model, &info);
            string kinds;
            for (int l = 0; l < info.n_layers; l++) {
                sf_layer_description layer;
                sf_model_describe_layer(model, l, &layer);
                kinds += string(l ? "," : "") + transformName(layer.transform);
            }
            cout << argv[m] << ": N " << info.N << ", " << info.n_layers << " layers (" << kinds << ")" << endl;
            // The fused program with and without periodic boundaries, and the
            // batched path's (its periodic code is the fused one's, so once).
            for (int variant = 0; variant < 3; variant++) {
                const bool periodic = variant == 1, batched = variant == 2;
                const map<string, string> defines =
                    commonSmoothFlowProgramDefines(model, periodic, workGroupSize, batched);
                for (Precision precision : {kSingle, kMixed, kDouble}) {
                    const string text = cudaProgramText(precision, *common, *vectorOps, source, defines);
                    const string label =
                        string(kPrecisionName[precision]) + (periodic ? ", periodic" : "") + (batched ? ", batched stages" : "");
                    // Transform kinds, widths and weights are data: models of one shape share the program text.
                    auto seen = compiled.find(text);
                    if (seen != compiled.end()) {
                        cout << "  " << label << ": the same program as " << seen->second << endl;
                        continue;
                    }
                    compiled[text] = string(argv[m]) + " (" + label + ")";
                    const Compiled result = compile(nvrtc, text, arch);
                    if (!result.ok) {
                        cout << "  " << label << ": FAIL, NVRTC cannot compile the program:\n" << result.log << endl;
                        failures++;
                        continue;
                    }
                    const bool complete = batched ? !entryBody(result.ptx, "computeSmoothFlowStage").empty()
                                                  : !entryBody(result.ptx, "computeSmoothFlow").empty() &&
                                                        !entryBody(result.ptx, "sumSmoothFlowEnergy").empty();
                    if (!complete) {
                        cout << "  " << label << ": FAIL, the PTX lacks "
                             << (batched ? "computeSmoothFlowStage" : "computeSmoothFlow or sumSmoothFlowEnergy") << endl;
                        failures++;
                        continue;
                    }
                    int openmmWarnings = 0;
                    failures += checkWarnings(result, text, source, label, openmmWarnings);
                    if (openmmWarnings && openmmNote.empty())
                        openmmNote = result.log.substr(0, result.log.find('\n'));
                }
            }
            // The finiteness test under --use_fast_math, once per precision.
            if (m == firstModel) {
                for (Precision precision : {kSingle, kMixed, kDouble}) {
                    const string text = cudaProgramText(precision, *common, *vectorOps, source + kProbe,
                                                        commonSmoothFlowProgramDefines(model, false, workGroupSize));
                    const Compiled result = compile(nvrtc, text, arch);
                    const string body = entryBody(result.ptx, "sfProbeFinite");
                    // isfinite(x) is a comparison (|x| < inf, or testp.finite); folded away it would be a constant store.
                    const bool compares = body.find("setp.") != string::npos || body.find("testp.") != string::npos;
                    cout << "  " << kPrecisionName[precision] << ": sf_finite under --use_fast_math "
                         << (compares ? "still tests its argument" : "FAIL, is folded to a constant") << endl;
                    if (!result.ok || !compares) {
                        if (!result.ok)
                            cout << result.log << endl;
                        failures++;
                    }
                }
            }
            sf_model_free(model);
        }
        // The free-form kind: its own program, from the shape alone.
        const string freeFormSource = commonFreeFormProgramSource();
        const int freeFormGroup = commonFreeFormWorkGroupSize(false, 1024);
        const int shapes[][4] = {{4, 2, 8, 3}, {13, 3, 32, 2}};  // N, dim, hidden, layers
        for (const auto& shape : shapes) {
            cout << "free-form program: N " << shape[0] << ", d " << shape[1] << ", H " << shape[2] << ", "
                 << shape[3] << " layers" << endl;
            const map<string, string> defines =
                commonFreeFormProgramDefines(shape[0], shape[1], shape[2], shape[3], freeFormGroup);
            for (Precision precision : {kSingle, kMixed, kDouble}) {
                const string text = cudaProgramText(precision, *common, *vectorOps, freeFormSource, defines);
                const Compiled result = compile(nvrtc, text, arch);
                const string label = kPrecisionName[precision];
                if (!result.ok) {
                    cout << "  " << label << ": FAIL, NVRTC cannot compile the program:\n" << result.log << endl;
                    failures++;
                    continue;
                }
                if (entryBody(result.ptx, "computeFreeForm").empty() || entryBody(result.ptx, "sumFreeFormEnergy").empty()) {
                    cout << "  " << label << ": FAIL, the PTX lacks computeFreeForm or sumFreeFormEnergy" << endl;
                    failures++;
                    continue;
                }
                int openmmWarnings = 0;
                failures += checkWarnings(result, text, freeFormSource, label, openmmWarnings);
            }
        }
    } catch (const exception& e) {
        cerr << "FAIL: " << e.what() << endl;
        return 1;
    }
    if (!openmmNote.empty())
        cout << "OpenMM's prelude itself draws NVRTC warnings (not the plugin's), such as: " << openmmNote << endl;
    if (failures) {
        cout << "FAIL: " << failures << " of the compilations failed" << endl;
        return 1;
    }
    cout << "PASS" << endl;
    return 0;
}
