#include "CommonSmoothFlowKernels.h"
#include "CommonDeviceMolecules.h"
#include "CommonSmoothFlowKernelSources.h"
#include "SmoothFlowCoreError.h"
#include "openmm/OpenMMException.h"
#include "openmm/common/ContextSelector.h"
#include "openmm/internal/ContextImpl.h"
#include "sf_math_kernel_source.h"
#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <map>
#include <sstream>

using namespace SmoothFlowPlugin;
using namespace OpenMM;
using namespace std;

namespace {

// Must match MI_*, MR_*, LF_* and LAYER_FIELDS of kernels/smoothflow.cc.
const int kHeaderFields = 8, kLayerFields = 16;
enum { kStride, kGenc, kGa, kGb, kBeta };

// One molecule's error code from the kernel, for messages (SF_DEVICE_* in kernels/smoothflow.cc).
const char* deviceErrorName(int code) {
    switch (code) {
    case 1: return "a position that is not finite";
    case 2: return "a degenerate internal coordinate (coincident atoms or collinear atoms)";
    case 3: return "an internal coordinate whose normalized value or wall energy is not finite, or outside the support";
    case 4: return "a layer whose inverse did not converge or whose input lies on the affine transform's boundary";
    case 5: return "a layer whose output or log-determinant is not finite";
    case 6: return "an energy that is not finite";
    case 7: return "a force that is not finite";
    case 8:
        return "an affine layer's input that rounds to exactly 0 or 1 in float: the layer before it put the state's logit "
               "beyond float's range (about +-17; double reaches +-37). Evaluate this model in double precision "
               "(Precision=double)";
    default: return "an unknown error";
    }
}

// One molecule's slice of `scratch`, in reals (kernels/smoothflow.cc): the
// positions, q, the clamp slopes, the B rows, the L + 1 states and the
// gradients, then per layer its encoded input, hidden (aux, post) blocks and
// conditioner output, kept for the reverse pass.
struct ScratchLayout {
    int posAt, qAt, slopeAt, rowsAt, stateAt, gstateAt, gparamsAt, gencAt, gaAt, gbAt;
    vector<int> encAt, hiddenAt, paramsAt;  // per layer
    int size;                               // the stride between molecules
};

vector<sf_layer_description> describeLayers(const sf_model* m) {
    sf_model_description info;
    sf_model_describe(m, &info);
    vector<sf_layer_description> layers(info.n_layers);
    for (int l = 0; l < info.n_layers; l++)
        sf_model_describe_layer(m, l, &layers[l]);
    return layers;
}

ScratchLayout scratchLayout(const sf_model_description& info, const vector<sf_layer_description>& layers) {
    const int N = info.N, D = info.D, NL = info.n_layers;
    int maxParams = 1, maxIn = 1, maxWidth = 1;
    for (const sf_layer_description& L : layers) {
        maxParams = max(maxParams, L.n_trans * L.P);
        maxIn = max(maxIn, L.width[0]);
        for (int k = 1; k < L.n_linear; k++)
            maxWidth = max(maxWidth, L.width[k]);
    }
    ScratchLayout s;
    s.posAt = 0;
    s.qAt = s.posAt + 3 * N;
    s.slopeAt = s.qAt + D;
    s.rowsAt = s.slopeAt + D;
    s.stateAt = s.rowsAt + 12 * D;
    s.gstateAt = s.stateAt + (NL + 1) * D;
    s.gparamsAt = s.gstateAt + D;
    s.gencAt = s.gparamsAt + maxParams;
    s.gaAt = s.gencAt + maxIn;
    s.gbAt = s.gaAt + maxWidth;
    s.size = s.gbAt + maxWidth;
    for (const sf_layer_description& L : layers) {
        s.encAt.push_back(s.size);
        s.size += L.width[0];
        s.hiddenAt.push_back(s.size);
        for (int k = 1; k < L.n_linear; k++)
            s.size += 2 * L.width[k];
        s.paramsAt.push_back(s.size);
        s.size += L.n_trans * L.P;
    }
    return s;
}

class ParticleIndexListener : public ComputeContext::ReorderListener {
public:
    explicit ParticleIndexListener(CommonCalcSmoothFlowForceKernel& owner) : owner(owner) {
    }
    void execute() override {
        owner.updateParticleIndex();
    }
private:
    CommonCalcSmoothFlowForceKernel& owner;
};

} // namespace

int SmoothFlowPlugin::commonSmoothFlowWorkGroupSize(bool isCPU, int maxThreadBlockSize) {
    // One molecule per work-group; a CPU device (PoCL) runs a work-group's
    // threads as loops, so fewer of them waste less on short stages.
    return min(isCPU ? 16 : 64, maxThreadBlockSize);
}

string SmoothFlowPlugin::commonSmoothFlowProgramSource() {
    // OpenMM's prelude (added by compileProgram) defines the dialect (DEVICE,
    // GLOBAL, real, USE_DOUBLE_PRECISION); then the shared mathematics, then
    // the kernels.
    return string(sf_math_kernel_source) + "\n" + CommonSmoothFlowKernelSources::smoothflow;
}

map<string, string> SmoothFlowPlugin::commonSmoothFlowProgramDefines(const sf_model* model, bool periodic,
                                                                     int workGroupSize, bool batchedStages) {
    // Only the model's shape is compiled in (kernels/smoothflow.cc): models
    // of one shape share a program.
    sf_model_description info;
    sf_model_describe(model, &info);
    const ScratchLayout layout = scratchLayout(info, describeLayers(model));
    map<string, string> defines;
    defines["WORK_GROUP_SIZE"] = to_string(workGroupSize);
    defines["NUM_ATOMS"] = to_string(info.N);
    defines["NUM_DIMS"] = to_string(info.D);
    defines["NUM_INTERVAL"] = to_string(2 * info.N - 3);
    defines["NUM_LAYERS"] = to_string(info.n_layers);
    defines["PERIODIC"] = periodic ? "1" : "0";
    defines["WALL"] = info.policy == SF_SUPPORT_WALL ? "1" : "0";
    defines["HAS_PRIOR"] = info.has_prior ? "1" : "0";
    double mean0, kappa0;       // von Mises torsions: the prior answers for torsion 0 (N >= 4)
    defines["HAS_TORSION_PRIOR"] = info.N >= 4 && sf_model_torsion_prior(model, 0, &mean0, &kappa0) == SF_OK ? "1" : "0";
    defines["POS_AT"] = to_string(layout.posAt);
    defines["Q_AT"] = to_string(layout.qAt);
    defines["SLOPE_AT"] = to_string(layout.slopeAt);
    defines["ROWS_AT"] = to_string(layout.rowsAt);
    defines["STATE_AT"] = to_string(layout.stateAt);
    defines["GSTATE_AT"] = to_string(layout.gstateAt);
    defines["GPARAMS_AT"] = to_string(layout.gparamsAt);
    defines["BATCHED_STAGES"] = batchedStages ? "1" : "0";
    return defines;
}

SmoothFlowDevicePath SmoothFlowPlugin::smoothFlowDevicePathFromEnvironment() {
    const char* value = getenv("SMOOTHFLOW_DEVICE_PATH");
    if (value == nullptr || *value == '\0' || strcmp(value, "auto") == 0)
        return SmoothFlowDevicePath::Auto;
    if (strcmp(value, "fused") == 0)
        return SmoothFlowDevicePath::Fused;
    if (strcmp(value, "batched") == 0)
        return SmoothFlowDevicePath::Batched;
    throw OpenMMException(string("SmoothFlowForce: the environment variable SMOOTHFLOW_DEVICE_PATH is '") + value +
                          "'; it must be auto, fused or batched");
}

CommonCalcSmoothFlowForceKernel::CommonCalcSmoothFlowForceKernel(const string& name, const Platform& platform, ComputeContext& cc,
                                                                 unique_ptr<SmoothFlowMatrixProducts> products,
                                                                 const string& noProducts) :
        CalcSmoothFlowForceKernel(name, platform), cc(cc), products(move(products)), noProducts(noProducts) {
}

void CommonCalcSmoothFlowForceKernel::initialize(const System& /*system*/, const SmoothFlowForce& force, const vector<int>& particles) {
    // A free-form model (no Z-matrix, no coupling layers) has a kernel of its own.
    if (force.getModelKind() == SmoothFlowForce::FreeFormFlow) {
        freeForm.reset(new CommonFreeFormKernel(cc, getPlatform().getName()));
        freeForm->initialize(force, particles);
        return;
    }
    ContextSelector selector(cc);
    model = force.getModel();
    this->particles = particles;
    const sf_model* m = model.get();
    sf_model_description info;
    sf_model_describe(m, &info);
    numAtoms = info.N;
    numMolecules = particles.size() / numAtoms;
    usePeriodic = force.usesPeriodicBoundaryConditions();
    const int N = info.N, NL = info.n_layers;
    const bool useDouble = cc.getUseDoublePrecision();
    const bool mixedIsDouble = useDouble || cc.getUseMixedPrecision();
    const int realSize = useDouble ? sizeof(double) : sizeof(float);

    // modelInt: the Z-matrix rows, the layer table, then each layer's dims,
    // widths and the offsets of its weights; weights: every linear map's W and
    // bias; the scratch offsets of one molecule as they are laid out.
    vector<int> ints(4 * N + kHeaderFields, 0);
    for (int r = 0; r < N; r++)
        sf_model_zmatrix_row(m, r, &ints[4 * r]);
    const int layerTable = ints.size();
    ints.resize(ints.size() + NL * kLayerFields, 0);
    vector<double> weightValues;
    const vector<sf_layer_description> layers = describeLayers(m);
    const ScratchLayout layout = scratchLayout(info, layers);
    for (int l = 0; l < NL; l++) {
        const sf_layer_description& L = layers[l];
        int* row = &ints[layerTable + l * kLayerFields];
        row[0] = L.transform;
        row[1] = L.generative;
        row[2] = L.n_trans;
        row[3] = L.n_cond;
        row[4] = L.K;
        row[5] = L.P;
        row[6] = L.activation;
        row[7] = L.n_linear;
        row[12] = layout.encAt[l];
        row[13] = layout.hiddenAt[l];
        row[14] = layout.paramsAt[l];
    }
    linearMaps.assign(NL, {});
    for (int l = 0; l < NL; l++) {
        const sf_layer_description& L = layers[l];
        const int transAt = ints.size();
        ints.insert(ints.end(), L.trans, L.trans + L.n_trans);
        const int condAt = ints.size();
        ints.insert(ints.end(), L.cond, L.cond + L.n_cond);
        const int widthAt = ints.size();
        ints.insert(ints.end(), L.width, L.width + L.n_linear + 1);
        const int linearAt = ints.size();
        for (int k = 0; k < L.n_linear; k++) {
            const size_t nIn = L.width[k], nOut = L.width[k + 1];
            ints.push_back(weightValues.size());
            // The batched path's products (kernels/smoothflow.cc: sf_hidden_at, sf_backward_src/dst).
            LinearMap map;
            map.nIn = nIn;
            map.nOut = nOut;
            map.weight = weightValues.size();
            int hidden = layout.hiddenAt[l];
            for (int j = 1; j < k; j++)
                hidden += 2 * L.width[j];
            map.input = k == 0 ? layout.encAt[l] : hidden + (int) nIn;
            map.output = k == L.n_linear - 1 ? layout.paramsAt[l] : (k == 0 ? layout.hiddenAt[l] : hidden + 2 * (int) nIn);
            map.gradOut = k == 0 ? layout.gencAt : ((L.n_linear - 1 - k) % 2 == 0 ? layout.gaAt : layout.gbAt);
            map.gradIn = k == L.n_linear - 1 ? layout.gparamsAt
                                             : ((L.n_linear - 2 - k) % 2 == 0 ? layout.gaAt : layout.gbAt);
            linearMaps[l].push_back(map);
            const double* W = sf_model_layer_weight(m, l, k);
            weightValues.insert(weightValues.end(), W, W + nIn * nOut);
            ints.push_back(weightValues.size());
            const double* b = sf_model_layer_bias(m, l, k);
            weightValues.insert(weightValues.end(), b, b + nOut);
        }
        int* row = &ints[layerTable + l * kLayerFields];
        row[8] = transAt;
        row[9] = condAt;
        row[10] = widthAt;
        row[11] = linearAt;
    }
    int* header = &ints[4 * N];
    header[kStride] = layout.size;
    header[kGenc] = layout.gencAt;
    header[kGa] = layout.gaAt;
    header[kGb] = layout.gbAt;
    header[kBeta] = info.smooth.beta;
    // modelReal: the model's constants, the bond bounds, the prior's means and sigmas, the
    // wall's edge forces (MR_EDGES of kernels/smoothflow.cc), then the torsions' von Mises
    // means and kappas (0 when the torsions are uniform).
    vector<double> reals = {info.margin, info.wall_constant, info.smooth.s_min, info.smooth.c_max, info.smooth.alpha_min,
                            info.spline.min_bin_width, info.spline.min_bin_height, info.spline.min_derivative,
                            info.affine.scale_max, info.angle_margin};
    const size_t bonds = reals.size(), edges = bonds + 2 * (N - 1) + 2 * (2 * N - 3);
    const size_t torsions = edges + 2 * (2 * N - 3);
    reals.resize(torsions + 2 * max(N - 3, 0), 0.0);
    for (int d = 0; d < N - 1; d++)
        sf_model_bond_bounds(m, d, &reals[bonds + d], &reals[bonds + N - 1 + d]);
    if (info.has_prior)
        for (int d = 0; d < 2 * N - 3; d++)
            sf_model_prior(m, d, &reals[bonds + 2 * (N - 1) + d], &reals[bonds + 2 * (N - 1) + 2 * N - 3 + d]);
    for (int d = 0; d < 2 * N - 3; d++)
        sf_model_edge_force(m, d, &reals[edges + d], &reals[edges + 2 * N - 3 + d]);
    for (int t = 0; t < N - 3; t++)
        if (sf_model_torsion_prior(m, t, &reals[torsions + t], &reals[torsions + N - 3 + t]) != SF_OK) break;
    kT = info.kT;
    energyConstant = info.kT * info.log_scale_sum + info.energy_offset + info.kT * info.prior_log_norm;

    modelInt.initialize<int>(cc, ints.size(), "smoothflowModelInt");
    modelInt.upload(ints);
    modelReal.initialize(cc, reals.size(), realSize, "smoothflowModelReal");
    modelReal.upload(reals, true);
    weights.initialize(cc, max<size_t>(1, weightValues.size()), realSize, "smoothflowWeights");
    weightValues.resize(weights.getSize(), 0.0);
    weights.upload(weightValues, true);
    scratch.initialize(cc, (size_t) layout.size * numMolecules, realSize, "smoothflowScratch");
    moleculeEnergy.initialize(cc, numMolecules, mixedIsDouble ? sizeof(double) : sizeof(float), "smoothflowMoleculeEnergy");
    status.initialize<int>(cc, numMolecules, "smoothflowStatus");
    status.upload(vector<int>(numMolecules, 0));
    errorFlag.initialize<int>(cc, 1, "smoothflowErrorFlag");
    errorFlag.upload(vector<int>(1, 0));
    wallCounts.initialize<long long>(cc, numMolecules, "smoothflowWallCounts");
    wallCounts.upload(vector<long long>(numMolecules, 0));
    particleIndex.initialize<int>(cc, particles.size(), "smoothflowParticleIndex");
    updateParticleIndex();
    cc.addReorderListener(new ParticleIndexListener(*this));

    stride = layout.size;

    // Which path (SmoothFlowDevicePath): fused unless the batched one may win.
    const SmoothFlowDevicePath requested = smoothFlowDevicePathFromEnvironment();
    if (requested == SmoothFlowDevicePath::Batched && !products)
        throw OpenMMException("SmoothFlowForce: SMOOTHFLOW_DEVICE_PATH=batched, but the batched path is not available on "
                              "the " + getPlatform().getName() + " platform: " + noProducts);
    if (requested == SmoothFlowDevicePath::Auto)
        path = products && numMolecules >= kMinBatchedMolecules ? SmoothFlowDevicePath::Auto : SmoothFlowDevicePath::Fused;
    else
        path = requested;

    workGroupSize = commonSmoothFlowWorkGroupSize(cc.getIsCPU(), cc.getMaxThreadBlockSize());
    ComputeProgram program =
        cc.compileProgram(commonSmoothFlowProgramSource(), commonSmoothFlowProgramDefines(m, usePeriodic, workGroupSize));
    // The arguments both kernels share, in order, after their own first ones.
    auto addModelArguments = [&](ComputeKernel& kernel, bool partials) {
        kernel->addArg(cc.getPosq());
        kernel->addArg(particleIndex);
        kernel->addArg(modelInt);
        kernel->addArg(modelReal);
        kernel->addArg(weights);
        kernel->addArg(scratch);
        kernel->addArg(moleculeEnergy);
        kernel->addArg(cc.getLongForceBuffer());
        kernel->addArg(status);
        kernel->addArg(errorFlag);
        kernel->addArg(wallCounts);
        if (partials) {
            kernel->addArg(energyPartial);
            kernel->addArg(wallPartial);
        }
        kernel->addArg(numMolecules);
        kernel->addArg(cc.getPaddedNumAtoms());
        if (mixedIsDouble) {
            kernel->addArg(kT);
            kernel->addArg(energyConstant);
        } else {
            kernel->addArg((float) kT);
            kernel->addArg((float) energyConstant);
        }
        for (int i = 0; i < 5; i++)
            kernel->addArg();  // includeForces, commit and the box vectors, set per call
    };
    computeKernel = program->createKernel("computeSmoothFlow");
    addModelArguments(computeKernel, false);
    if (path != SmoothFlowDevicePath::Fused) {
        // Each thread's energy and wall-count shares between the stages.
        energyPartial.initialize(cc, (size_t) numMolecules * workGroupSize, mixedIsDouble ? sizeof(double) : sizeof(float),
                                 "smoothflowEnergyPartial");
        wallPartial.initialize<int>(cc, (size_t) numMolecules * workGroupSize, "smoothflowWallPartial");
        ComputeProgram stages = cc.compileProgram(commonSmoothFlowProgramSource(),
                                                  commonSmoothFlowProgramDefines(m, usePeriodic, workGroupSize, true));
        stageKernel = stages->createKernel("computeSmoothFlowStage");
        for (int i = 0; i < 3; i++)
            stageKernel->addArg();  // stage, layer, linear map
        addModelArguments(stageKernel, true);
    }
    sumKernel = program->createKernel("sumSmoothFlowEnergy");
    sumKernel->addArg(moleculeEnergy);
    sumKernel->addArg(cc.getEnergyBuffer());
    sumKernel->addArg(numMolecules);
}

void CommonCalcSmoothFlowForceKernel::updateParticleIndex() {
    hostParticleIndex = deviceParticleSlots(cc, particles);
    particleIndex.upload(hostParticleIndex);
}

void CommonCalcSmoothFlowForceKernel::setStepArguments(ComputeKernel& kernel, int first, bool includeForces, bool commit) {
    Vec3 a, b, c;
    cc.getPeriodicBoxVectors(a, b, c);
    kernel->setArg(first, includeForces ? 1 : 0);
    kernel->setArg(first + 1, commit ? 1 : 0);
    if (cc.getUseDoublePrecision()) {
        kernel->setArg(first + 2, mm_double4(a[0], a[1], a[2], 0));
        kernel->setArg(first + 3, mm_double4(b[0], b[1], b[2], 0));
        kernel->setArg(first + 4, mm_double4(c[0], c[1], c[2], 0));
    } else {
        kernel->setArg(first + 2, mm_float4((float) a[0], (float) a[1], (float) a[2], 0));
        kernel->setArg(first + 3, mm_float4((float) b[0], (float) b[1], (float) b[2], 0));
        kernel->setArg(first + 4, mm_float4((float) c[0], (float) c[1], (float) c[2], 0));
    }
}

void CommonCalcSmoothFlowForceKernel::runFused(bool includeForces, bool commit) {
    setStepArguments(computeKernel, 15, includeForces, commit);
    computeKernel->execute(numMolecules * workGroupSize, workGroupSize);
}

// Must match SF_STAGE_* of kernels/smoothflow.cc.
enum { kStageCoordinates, kStageEncode, kStageBiasActivate, kStageStep, kStageEnergy, kStageAdjoint,
       kStageActivationGrad, kStageEncodeGrad, kStageForces };

void CommonCalcSmoothFlowForceKernel::runBatched(bool includeForces, bool commit) {
    setStepArguments(stageKernel, 20, includeForces, commit);
    auto launch = [&](int stage, int layer, int linear) {
        stageKernel->setArg(0, stage);
        stageKernel->setArg(1, layer);
        stageKernel->setArg(2, linear);
        stageKernel->execute(numMolecules * workGroupSize, workGroupSize);
    };
    const int NL = linearMaps.size();
    // The molecules are the columns: each one's scratch slice is a column of
    // stride reals, W (row major nOut x nIn) is column-major nIn x nOut.
    launch(kStageCoordinates, 0, 0);
    for (int l = NL - 1; l >= 0; l--) {
        launch(kStageEncode, l, 0);
        for (size_t k = 0; k < linearMaps[l].size(); k++) {
            const LinearMap& L = linearMaps[l][k];
            products->multiply(true, L.nOut, numMolecules, L.nIn, weights, L.weight, L.nIn, scratch, L.input, stride,
                               scratch, L.output, stride);
            launch(kStageBiasActivate, l, k);
        }
        launch(kStageStep, l, 0);
    }
    launch(kStageEnergy, 0, 0);
    if (!includeForces)
        return;
    for (int l = 0; l < NL; l++) {
        launch(kStageAdjoint, l, 0);
        for (int k = linearMaps[l].size() - 1; k >= 0; k--) {
            const LinearMap& L = linearMaps[l][k];
            products->multiply(false, L.nIn, numMolecules, L.nOut, weights, L.weight, L.nIn, scratch, L.gradIn, stride,
                               scratch, L.gradOut, stride);
            if (k > 0)
                launch(kStageActivationGrad, l, k);
        }
        launch(kStageEncodeGrad, l, 0);
    }
    launch(kStageForces, 0, 0);
}

void CommonCalcSmoothFlowForceKernel::chooseByTrial() {
    // Both paths evaluate the current positions without adding forces or
    // wall counts (commit 0); a one-int download waits for the queue.  The
    // first round warms up (the BLAS compiles or loads its kernels), the
    // best of the next two counts.
    int flag;
    auto timeOf = [&](bool batched) {
        errorFlag.download(&flag);
        const auto start = chrono::steady_clock::now();
        if (batched)
            runBatched(true, false);
        else
            runFused(true, false);
        errorFlag.download(&flag);
        return chrono::duration<double>(chrono::steady_clock::now() - start).count();
    };
    double fused = 1e300, batched = 1e300;
    for (int round = 0; round < 3; round++) {
        const double f = timeOf(false), b = timeOf(true);
        if (round > 0) {
            fused = min(fused, f);
            batched = min(batched, b);
        }
    }
    path = batched < fused ? SmoothFlowDevicePath::Batched : SmoothFlowDevicePath::Fused;
    if (getenv("SMOOTHFLOW_VERBOSE") != nullptr)
        cerr << "SmoothFlowForce on " << getPlatform().getName() << ", " << numMolecules << " molecules: fused "
             << fused * 1e3 << " ms, batched (" << products->name() << ") " << batched * 1e3
             << " ms per evaluation with forces: " << (path == SmoothFlowDevicePath::Batched ? "batched" : "fused")
             << endl;
}

double CommonCalcSmoothFlowForceKernel::execute(ContextImpl& /*context*/, bool includeForces, bool includeEnergy) {
    if (freeForm) {
        freeForm->execute(includeForces, includeEnergy);
        return 0.0;
    }
    ContextSelector selector(cc);
    // `auto` decides at the first evaluation with forces (an MD step's kind).
    if (path == SmoothFlowDevicePath::Auto && includeForces)
        chooseByTrial();
    if (path == SmoothFlowDevicePath::Batched)
        runBatched(includeForces, true);
    else
        runFused(includeForces, true);
    if (includeEnergy) {
        sumKernel->execute(workGroupSize, workGroupSize);
        // The energy is read back now anyway: the error flag comes with it.
        checkErrors();
    }
    return 0.0;  // the energy is in OpenMM's energy buffer
}

void CommonCalcSmoothFlowForceKernel::checkErrors() {
    checkDeviceErrors(errorFlag, status, numMolecules, [this](int molecule, int code) { reportError(molecule, code); });
}

void CommonCalcSmoothFlowForceKernel::reportError(int molecule, int code) {
    Vec3 boxVectors[3];
    cc.getPeriodicBoxVectors(boxVectors[0], boxVectors[1], boxVectors[2]);
    double box[9];
    for (int v = 0; v < 3; v++)
        for (int k = 0; k < 3; k++)
            box[3 * v + k] = boxVectors[v][k];
    reportDeviceError(cc, model.get(), hostParticleIndex, particles, numAtoms, molecule, usePeriodic ? box : nullptr,
                      "device kernel", deviceErrorName(code));
}

long long CommonCalcSmoothFlowForceKernel::getWallCount() const {
    if (freeForm)
        return 0;  // a free-form model has no wall
    ContextSelector selector(cc);
    vector<long long> counts;
    wallCounts.download(counts);
    long long total = 0;
    for (long long n : counts)
        total += n;
    return total;
}
