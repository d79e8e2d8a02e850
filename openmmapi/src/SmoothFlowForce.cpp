#include "SmoothFlowForce.h"
#include "SmoothFlowCoreError.h"
#include "internal/SmoothFlowForceImpl.h"
#include "openmm/OpenMMException.h"
#include "smoothflow.h"
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>

using namespace SmoothFlowPlugin;
using namespace OpenMM;
using namespace std;

// Only a regular file of at most SF_MAX_FILE_SIZE bytes, as sf_model_load_file reads: a
// directory, a device such as /dev/zero (which reads forever) or a FIFO (whose opening waits for
// a writer) is refused before it is opened.
static vector<char> readFile(const string& file) {
    error_code code;
    filesystem::file_status status = filesystem::status(file, code);
    if (!code && filesystem::exists(status) && !filesystem::is_regular_file(status))
        throw OpenMMException("SmoothFlowForce: model file '" + file + "' is not a regular file (a directory, device "
                              "or pipe)");
    ifstream in(file, ios::binary);
    if (!in)
        throw OpenMMException("SmoothFlowForce: cannot open model file '" + file + "': " + strerror(errno));
    uintmax_t size = filesystem::file_size(file, code);
    if (!code && size > SF_MAX_FILE_SIZE)
        throw OpenMMException("SmoothFlowForce: model file '" + file + "' is " + to_string(size) +
                              " bytes, more than the limit of " + to_string(SF_MAX_FILE_SIZE) + " bytes (1 GiB)");
    vector<char> bytes;
    char chunk[1 << 16];
    while (in.read(chunk, sizeof chunk) || in.gcount() > 0) {
        bytes.insert(bytes.end(), chunk, chunk + in.gcount());
        if (bytes.size() > SF_MAX_FILE_SIZE)
            throw OpenMMException("SmoothFlowForce: model file '" + file + "' is more than the limit of " +
                                  to_string(SF_MAX_FILE_SIZE) + " bytes (1 GiB)");
    }
    if (in.bad())
        throw OpenMMException("SmoothFlowForce: cannot read model file '" + file + "'");
    return bytes;
}

static string orEmpty(const char* s) {
    return s == nullptr ? string() : string(s);
}

SmoothFlowForce::SmoothFlowForce(const string& file) : SmoothFlowForce(readFile(file), "model file '" + file + "'") {
}

SmoothFlowForce* SmoothFlowForce::createFromBytes(const vector<char>& modelBytes) {
    return new SmoothFlowForce(modelBytes, "model bytes");
}

// A model loaded from its bytes, in the given weight precision, owned by a shared_ptr.
static shared_ptr<const sf_model> loadModel(const vector<char>& bytes, const string& source,
                                            sf_weight_precision precision) {
    sf_model* loaded = nullptr;
    sf_error error{};
    sf_status status = sf_model_load_bytes(bytes.data(), bytes.size(), &loaded, &error);
    if (status != SF_OK)
        throwCoreError("cannot load " + source, status, error);
    shared_ptr<const sf_model> owned(loaded, [](const sf_model* m) { sf_model_free(const_cast<sf_model*>(m)); });
    status = sf_model_set_weight_precision(loaded, precision, &error);
    if (status != SF_OK)
        throwCoreError("cannot set the weight precision of " + source, status, error);
    return owned;
}

SmoothFlowForce::SmoothFlowForce(vector<char> bytes, const string& source) : modelBytes(std::move(bytes)), periodic(false),
    weightPrecision(WeightsFloat64) {
    // Load now, so that a bad model fails where it is named rather than at
    // Context creation.  The model is immutable and shared with every kernel.
    model = loadModel(modelBytes, source, SF_WEIGHTS_FLOAT64);
    const sf_model* loaded = model.get();
    int numAtoms = sf_model_num_atoms(loaded);
    for (int a = 0; a < numAtoms; a++) {
        atomNames.push_back(orEmpty(sf_model_atom_name(loaded, a)));
        residueNames.push_back(orEmpty(sf_model_atom_residue(loaded, a)));
        residueIndices.push_back(sf_model_atom_name(loaded, a) == nullptr ? -1 : sf_model_atom_residue_index(loaded, a));
    }
    config = orEmpty(sf_model_config_json(loaded));
}

const vector<char>& SmoothFlowForce::getModelBytes() const {
    return modelBytes;
}

int SmoothFlowForce::getNumModelAtoms() const {
    return sf_model_num_atoms(model.get());
}

SmoothFlowForce::ModelKind SmoothFlowForce::getModelKind() const {
    return sf_model_flow_kind(model.get()) == SF_FLOW_FREE_FORM ? FreeFormFlow : InternalCoordinateFlow;
}

int SmoothFlowForce::getSpatialDimension() const {
    return sf_model_spatial_dim(model.get());
}

double SmoothFlowForce::getTemperature() const {
    return sf_model_temperature(model.get());
}

double SmoothFlowForce::getKT() const {
    return sf_model_kT(model.get());
}

SmoothFlowForce::SupportPolicy SmoothFlowForce::getSupportPolicy() const {
    return sf_model_support_policy(model.get()) == SF_SUPPORT_WALL ? SupportWall : SupportError;
}

bool SmoothFlowForce::hasModelAtomInfo() const {
    return !atomNames.empty() && sf_model_atom_name(model.get(), 0) != nullptr;
}

static void checkAtomIndex(int atom, int numAtoms) {
    if (atom < 0 || atom >= numAtoms)
        throw OpenMMException("SmoothFlowForce: model atom index " + to_string(atom) + " is out of range (the model has " +
                              to_string(numAtoms) + " atoms)");
}

const string& SmoothFlowForce::getModelAtomName(int atom) const {
    checkAtomIndex(atom, getNumModelAtoms());
    return atomNames[atom];
}

const string& SmoothFlowForce::getModelAtomResidueName(int atom) const {
    checkAtomIndex(atom, getNumModelAtoms());
    return residueNames[atom];
}

int SmoothFlowForce::getModelAtomResidueIndex(int atom) const {
    checkAtomIndex(atom, getNumModelAtoms());
    return residueIndices[atom];
}

const string& SmoothFlowForce::getModelConfig() const {
    return config;
}

void SmoothFlowForce::checkMolecule(const vector<int>& particles) const {
    // Only what is knowable without a System; SmoothFlowForceImpl::initialize
    // checks the indices against the System.
    int numAtoms = getNumModelAtoms();
    if ((int) particles.size() != numAtoms)
        throw OpenMMException("SmoothFlowForce: a molecule needs exactly " + to_string(numAtoms) +
                              (getModelKind() == FreeFormFlow ? " particles (the free-form model's particles)"
                                                              : " particles (one per model atom)") +
                              ", but " + to_string(particles.size()) + " were given");
    set<int> seen;
    for (int p : particles) {
        if (p < 0)
            throw OpenMMException("SmoothFlowForce: particle index " + to_string(p) + " is negative");
        if (!seen.insert(p).second)
            throw OpenMMException("SmoothFlowForce: particle " + to_string(p) + " appears twice in one molecule");
    }
}

static void checkMoleculeIndex(int index, int numMolecules) {
    if (index < 0 || index >= numMolecules)
        throw OpenMMException("SmoothFlowForce: molecule index " + to_string(index) + " is out of range (there are " +
                              to_string(numMolecules) + " molecules)");
}

void SmoothFlowForce::setParticles(const vector<int>& particles) {
    checkMolecule(particles);
    molecules.assign(1, particles);
}

int SmoothFlowForce::addMolecule(const vector<int>& particles) {
    checkMolecule(particles);
    molecules.push_back(particles);
    return molecules.size() - 1;
}

int SmoothFlowForce::getNumMolecules() const {
    return molecules.size();
}

const vector<int>& SmoothFlowForce::getMoleculeParticles(int index) const {
    checkMoleculeIndex(index, molecules.size());
    return molecules[index];
}

void SmoothFlowForce::setMoleculeParticles(int index, const vector<int>& particles) {
    checkMoleculeIndex(index, molecules.size());
    checkMolecule(particles);
    molecules[index] = particles;
}

void SmoothFlowForce::setUsesPeriodicBoundaryConditions(bool periodic) {
    this->periodic = periodic;
}

bool SmoothFlowForce::usesPeriodicBoundaryConditions() const {
    return periodic;
}

long long SmoothFlowForce::getWallCount(Context& context) const {
    return dynamic_cast<const SmoothFlowForceImpl&>(getImplInContext(context)).getWallCount();
}

void SmoothFlowForce::setWeightPrecision(WeightPrecision precision) {
    if (precision != WeightsFloat64 && precision != WeightsFloat32)
        throw OpenMMException("SmoothFlowForce: unknown weight precision " + to_string((int) precision) +
                              " (WeightsFloat64 = 0 or WeightsFloat32 = 1)");
    if (precision == weightPrecision)
        return;
    if (precision == WeightsFloat32 && getModelKind() == FreeFormFlow)
        throw OpenMMException("SmoothFlowForce: WeightsFloat32 applies to the coupling flows over internal "
                              "coordinates; a free-form model's encoder runs in float64 only");
    // A model of its own: Contexts made before keep theirs (changes take effect on reinitialize).
    model = loadModel(modelBytes, "the model", precision == WeightsFloat32 ? SF_WEIGHTS_FLOAT32 : SF_WEIGHTS_FLOAT64);
    weightPrecision = precision;
}

SmoothFlowForce::WeightPrecision SmoothFlowForce::getWeightPrecision() const {
    return weightPrecision;
}

shared_ptr<const sf_model> SmoothFlowForce::getModel() const {
    return model;
}

ForceImpl* SmoothFlowForce::createImpl() const {
    return new SmoothFlowForceImpl(*this);
}
