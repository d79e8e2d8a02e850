#include "CommonDeviceMolecules.h"
#include "SmoothFlowCoreError.h"
#include "openmm/OpenMMException.h"
#include <sstream>

using namespace SmoothFlowPlugin;
using namespace OpenMM;
using namespace std;

vector<int> SmoothFlowPlugin::deviceParticleSlots(ComputeContext& cc, const vector<int>& particles) {
    const vector<int>& atomIndex = cc.getAtomIndex();   // atomIndex[i]: the System particle in slot i
    vector<int> slot(atomIndex.size()), out(particles.size());
    for (size_t i = 0; i < atomIndex.size(); i++)
        slot[atomIndex[i]] = i;
    for (size_t i = 0; i < particles.size(); i++)
        out[i] = slot[particles[i]];
    return out;
}

void SmoothFlowPlugin::checkDeviceErrors(ComputeArray& errorFlag, ComputeArray& status, int numMolecules,
                                         const function<void(int, int)>& report) {
    int flag = 0;
    errorFlag.download(&flag);
    if (flag == 0)
        return;
    vector<int> codes;
    status.download(codes);
    errorFlag.upload(vector<int>(1, 0));
    status.upload(vector<int>(numMolecules, 0));
    for (int molecule = 0; molecule < numMolecules; molecule++)
        if (codes[molecule] != 0)
            report(molecule, codes[molecule]);
}

namespace {

// Molecule `molecule`'s positions as the device holds them, in model order.
template <class Real4>
void devicePositions(ComputeContext& cc, const vector<int>& hostParticleIndex, int numAtoms, int molecule,
                     vector<double>& pos) {
    vector<Real4> posq(cc.getPosq().getSize());
    cc.getPosq().download(posq.data());
    for (int a = 0; a < numAtoms; a++) {
        const Real4& p = posq[hostParticleIndex[molecule * numAtoms + a]];
        pos[3 * a] = p.x, pos[3 * a + 1] = p.y, pos[3 * a + 2] = p.z;
    }
}

} // namespace

void SmoothFlowPlugin::reportDeviceError(ComputeContext& cc, const sf_model* model, const vector<int>& hostParticleIndex,
                                         const vector<int>& particles, int numAtoms, int molecule, const double* box,
                                         const string& kernel, const char* found) {
    vector<double> pos(3 * numAtoms);
    if (cc.getUseDoublePrecision())
        devicePositions<mm_double4>(cc, hostParticleIndex, numAtoms, molecule, pos);
    else
        devicePositions<mm_float4>(cc, hostParticleIndex, numAtoms, molecule, pos);
    sf_workspace* workspace = nullptr;
    sf_error error{};
    sf_status result = sf_workspace_new(model, 1, &workspace, &error);
    if (result == SF_OK) {
        double energy;
        vector<double> forces(3 * numAtoms);
        result = sf_evaluate(model, workspace, 1, pos.data(), box, &energy, forces.data(), nullptr, &error);
        sf_workspace_free(workspace);
    }
    if (result != SF_OK) {
        offsetErrorMolecule(error, molecule);
        throwEvaluationError(result, error, particles, numAtoms);
    }
    stringstream where;
    for (int a = 0; a < numAtoms; a++)
        where << (a == 0 ? "" : ", ") << particles[molecule * numAtoms + a];
    const string precision = cc.getUseDoublePrecision() ? "double" : (cc.getUseMixedPrecision() ? "mixed" : "single");
    throw OpenMMException("SmoothFlowForce: evaluation failed: molecule " + to_string(molecule) + ": the " + precision +
                          "-precision " + kernel + " found " + found +
                          " in this evaluation or a forces-only one since the last energy evaluation, which the C core "
                          "does not find at the current positions [System particles " + where.str() + "]");
}
