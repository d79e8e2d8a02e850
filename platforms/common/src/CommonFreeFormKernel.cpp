#include "CommonFreeFormKernel.h"
#include "CommonDeviceMolecules.h"
#include "CommonSmoothFlowKernelSources.h"
#include "SmoothFlowCoreError.h"
#include "openmm/OpenMMException.h"
#include "openmm/common/ContextSelector.h"
#include "sf_math_kernel_source.h"
#include <algorithm>
#include <sstream>

using namespace SmoothFlowPlugin;
using namespace OpenMM;
using namespace std;

namespace {

// One copy's error code from the kernel, for messages (FF_DEVICE_* of kernels/free_form.cc).
const char* deviceErrorName(int code) {
    switch (code) {
    case 1: return "a position that is not finite";
    case 2: return "a zero pivot in the LU of the Jacobian J_V (det J_V = 0, or J_V not finite)";
    case 3: return "an energy that is not finite";
    case 4: return "a force that is not finite";
    default: return "an unknown error";
    }
}

// The encoder's shape and constants, through the core's public description (smoothflow.h).
sf_free_form_description describeFreeForm(const sf_model* model) {
    sf_free_form_description desc;
    if (sf_model_describe_free_form(model, &desc) != SF_OK)
        throw OpenMMException("SmoothFlowForce: the free-form device kernel was given a model of another kind");
    return desc;
}

// Reals of one layer's weights in the kernel's order (FF_W_* of kernels/free_form.cc).
size_t layerWeights(int H) {
    return (size_t) H * (2 * H + 1) + H + 2 * ((size_t) H * H + H) + H + 1 + 2 * (size_t) H * H + H + (size_t) H * H + H;
}

class ParticleIndexListener : public ComputeContext::ReorderListener {
public:
    explicit ParticleIndexListener(CommonFreeFormKernel& owner) : owner(owner) {
    }
    void execute() override {
        owner.updateParticleIndex();
    }
private:
    CommonFreeFormKernel& owner;
};

} // namespace

string SmoothFlowPlugin::commonFreeFormProgramSource() {
    // OpenMM's prelude (added by compileProgram) defines the dialect; then the shared
    // mathematics (sfm_silu2), then the kernels.
    return string(sf_math_kernel_source) + "\n" + CommonSmoothFlowKernelSources::free_form;
}

map<string, string> SmoothFlowPlugin::commonFreeFormProgramDefines(int numParticles, int dim, int hidden, int layers,
                                                                   int workGroupSize) {
    // Only the shape is compiled in: models of one shape share a program.
    map<string, string> defines;
    defines["WORK_GROUP_SIZE"] = to_string(workGroupSize);
    defines["FF_N"] = to_string(numParticles);
    defines["FF_DIM"] = to_string(dim);
    defines["FF_H"] = to_string(hidden);
    defines["FF_L"] = to_string(layers);
    return defines;
}

map<string, string> SmoothFlowPlugin::commonFreeFormProgramDefines(const sf_model* model, int workGroupSize) {
    const sf_free_form_description net = describeFreeForm(model);
    return commonFreeFormProgramDefines(net.n_particles, net.dim, net.hidden, net.n_layers, workGroupSize);
}

int SmoothFlowPlugin::commonFreeFormWorkGroupSize(bool isCPU, int maxThreadBlockSize) {
    // A CPU device (PoCL) runs a work-group's threads as loops: fewer waste less at barriers.
    return min(isCPU ? 16 : 128, maxThreadBlockSize);
}

size_t SmoothFlowPlugin::commonFreeFormWorkspaceReals(const sf_model* model) {
    // FF_WORKSPACE of kernels/free_form.cc.
    const sf_free_form_description net = describeFreeForm(model);
    const size_t n = net.n_particles, d = net.dim, H = net.hidden, L = net.n_layers;
    const size_t T = (n - 1) * d, S = T + 1, R = (n - 1) * S, nsd = n * S * d, nsh = n * S * H;
    return (L + 1) * nsd + 2 * L * nsh + 4 * nsh + 8 * R * H + 2 * R + R * d + 2 * nsh + 2 * nsd + 3 * nsh + n * d +
           2 * T * T;
}

CommonFreeFormKernel::CommonFreeFormKernel(ComputeContext& cc, const string& platformName) :
        cc(cc), platformName(platformName) {
}

void CommonFreeFormKernel::initialize(const SmoothFlowForce& force, const vector<int>& particles) {
    ContextSelector selector(cc);
    model = force.getModel();
    this->particles = particles;
    const sf_free_form_description net = describeFreeForm(model.get());
    numParticles = net.n_particles;
    numMolecules = particles.size() / numParticles;
    const int H = net.hidden, L = net.n_layers;
    const bool useDouble = cc.getUseDoublePrecision();
    const bool mixedIsDouble = useDouble || cc.getUseMixedPrecision();
    const int realSize = useDouble ? sizeof(double) : sizeof(float);

    // The device workspace: one slice per work-group running at once.
    const size_t slice = commonFreeFormWorkspaceReals(model.get()), sliceBytes = slice * realSize;
    if (sliceBytes > kMaxFreeFormWorkspaceBytes) {
        stringstream message;
        message << "SmoothFlowForce: the free-form model (" << net.n_particles << " particles in " << net.dim
                << " dimensions, hidden width " << H << ", " << L << " layers) needs " << sliceBytes / 1048576.0
                << " MiB of device workspace per copy evaluated at once, more than the " << platformName
                << " kernel's limit of " << kMaxFreeFormWorkspaceBytes / 1048576 << " MiB: create the Context on the "
                << "Reference or CPU platform"
                << (useDouble ? ", or in single or mixed precision (half the workspace)" : "");
        throw OpenMMException(message.str());
    }
    numGroups = (int) min<size_t>({(size_t) numMolecules, (size_t) max(1, cc.getNumThreadBlocks()),
                                  max<size_t>(1, kFreeFormWorkspaceBudgetBytes / sliceBytes)});

    // Weights, layer after layer in the kernel's order (zero where the last layer has no
    // node update), then h0.
    const size_t perLayer = layerWeights(H);
    vector<double> values(perLayer * L + H, 0.0);
    auto put = [&](size_t at, int layer, sf_egnn_linear which, int nOut, int nIn) {
        sf_free_form_linear linear;
        if (sf_model_free_form_linear(model.get(), layer, which, &linear) != SF_OK)
            throw OpenMMException("SmoothFlowForce: free-form layer " + to_string(layer) + " lacks linear map " +
                                  to_string((int) which) + " (smoothflow.h, sf_egnn_linear)");
        if (linear.n_out != nOut || linear.n_in != nIn)
            throw OpenMMException("SmoothFlowForce: a free-form layer's linear map has the shape " +
                                  to_string(linear.n_out) + " x " + to_string(linear.n_in) + ", not " + to_string(nOut) +
                                  " x " + to_string(nIn));
        copy(linear.weight, linear.weight + (size_t) nOut * nIn, values.begin() + at);
        copy(linear.bias, linear.bias + nOut, values.begin() + at + (size_t) nOut * nIn);
        return at + (size_t) nOut * nIn + nOut;
    };
    for (int l = 0; l < L; l++) {
        sf_free_form_layer_description layer;
        if (sf_model_describe_free_form_layer(model.get(), l, &layer) != SF_OK)
            throw OpenMMException("SmoothFlowForce: free-form layer " + to_string(l) + " is not described");
        if ((layer.has_node != 0) != (l < L - 1))
            throw OpenMMException("SmoothFlowForce: free-form layer " + to_string(l) + (layer.has_node ? " has" : " lacks") +
                                  " a node update; the device kernel expects one in every layer but the last");
        size_t at = perLayer * l;
        at = put(at, l, SF_EGNN_EDGE1, H, 2 * H + 1);
        at = put(at, l, SF_EGNN_EDGE2, H, H);
        at = put(at, l, SF_EGNN_COORD1, H, H);
        at = put(at, l, SF_EGNN_COORD2, 1, H);
        if (layer.has_node) {
            at = put(at, l, SF_EGNN_NODE1, H, 2 * H);
            put(at, l, SF_EGNN_NODE2, H, H);
        }
    }
    copy(net.h0, net.h0 + H, values.begin() + perLayer * L);

    weights.initialize(cc, values.size(), realSize, "freeFormWeights");
    weights.upload(values, true);
    scratch.initialize(cc, slice * numGroups, realSize, "freeFormScratch");
    moleculeEnergy.initialize(cc, numMolecules, mixedIsDouble ? sizeof(double) : sizeof(float), "freeFormMoleculeEnergy");
    status.initialize<int>(cc, numMolecules, "freeFormStatus");
    status.upload(vector<int>(numMolecules, 0));
    errorFlag.initialize<int>(cc, 1, "freeFormErrorFlag");
    errorFlag.upload(vector<int>(1, 0));
    particleIndex.initialize<int>(cc, particles.size(), "freeFormParticleIndex");
    updateParticleIndex();
    cc.addReorderListener(new ParticleIndexListener(*this));

    // U = -kT [-|z|^2 / 2 - (T/2) log(2 pi) + log |det J_V|] + U0: the constants here.
    const double kT = net.kT;
    const double energyConstant = net.energy_offset + kT * net.latent_log_norm;

    workGroupSize = commonFreeFormWorkGroupSize(cc.getIsCPU(), cc.getMaxThreadBlockSize());
    ComputeProgram program =
        cc.compileProgram(commonFreeFormProgramSource(), commonFreeFormProgramDefines(model.get(), workGroupSize));
    computeKernel = program->createKernel("computeFreeForm");
    computeKernel->addArg(cc.getPosq());
    computeKernel->addArg(particleIndex);
    computeKernel->addArg(weights);
    computeKernel->addArg(scratch);
    computeKernel->addArg(moleculeEnergy);
    computeKernel->addArg(cc.getLongForceBuffer());
    computeKernel->addArg(status);
    computeKernel->addArg(errorFlag);
    computeKernel->addArg(numMolecules);
    computeKernel->addArg(cc.getPaddedNumAtoms());
    if (useDouble)
        computeKernel->addArg(net.inv_scale2);
    else
        computeKernel->addArg((float) net.inv_scale2);
    if (mixedIsDouble) {
        computeKernel->addArg(kT);
        computeKernel->addArg(energyConstant);
    } else {
        computeKernel->addArg((float) kT);
        computeKernel->addArg((float) energyConstant);
    }
    computeKernel->addArg();  // includeForces, set per call
    sumKernel = program->createKernel("sumFreeFormEnergy");
    sumKernel->addArg(moleculeEnergy);
    sumKernel->addArg(cc.getEnergyBuffer());
    sumKernel->addArg(numMolecules);
}

void CommonFreeFormKernel::updateParticleIndex() {
    hostParticleIndex = deviceParticleSlots(cc, particles);
    particleIndex.upload(hostParticleIndex);
}

void CommonFreeFormKernel::execute(bool includeForces, bool includeEnergy) {
    ContextSelector selector(cc);
    computeKernel->setArg(13, includeForces ? 1 : 0);
    computeKernel->execute(numGroups * workGroupSize, workGroupSize);
    if (includeEnergy) {
        const int sumSize = min(64, cc.getMaxThreadBlockSize());
        sumKernel->execute(sumSize, sumSize);
        // The energy is read back now anyway: the error flag comes with it.
        checkErrors();
    }
}

void CommonFreeFormKernel::checkErrors() {
    checkDeviceErrors(errorFlag, status, numMolecules, [this](int molecule, int code) { reportError(molecule, code); });
}

void CommonFreeFormKernel::reportError(int molecule, int code) {
    reportDeviceError(cc, model.get(), hostParticleIndex, particles, numParticles, molecule, nullptr,
                      "free-form device kernel", deviceErrorName(code));
}
