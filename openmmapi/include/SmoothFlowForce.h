#ifndef OPENMM_SMOOTHFLOW_FORCE_H_
#define OPENMM_SMOOTHFLOW_FORCE_H_

#include "internal/windowsExportSmoothFlow.h"
#include "openmm/Context.h"
#include "openmm/Force.h"
#include <memory>
#include <string>
#include <vector>

// The C core's model handle, opaque here.  It is defined by smoothflow.h,
// which is installed with the plugin; only getModel() hands it out.
struct sf_model;

namespace SmoothFlowPlugin {

/**
 * A potential defined by a normalizing flow over the internal coordinates of a
 * molecule:
 *
 *     U(x) = -kT log p(x) + U0    (Jacobian terms of the coordinate change included)
 *
 * where p is the flow's density of the molecule's Cartesian configuration x,
 * T the model's temperature and U0 its energy offset.  Energies are in kJ/mol,
 * forces in kJ/mol/nm, positions in nm.  The forces are the exact negative
 * gradient of the energy.
 *
 * A model file may instead hold a free-form flow's E(n)-equivariant encoder f over
 * N identical particles in d = 2 or 3 dimensions (getModelKind() == FreeFormFlow;
 * docs/free-form-flows.md), with U(x) = -kT [log N(f(x); 0, I) + log |det J_V(x)|] + U0
 * on the centre-of-mass-free subspace V.  Its "atoms" are the N particles, which
 * any particle list may map (the energy is permutation invariant); a d = 2 model
 * reads x and y of each particle and puts no force on z, so the System must keep
 * z fixed.  Such a force is not periodic (setUsesPeriodicBoundaryConditions(true)
 * is refused at Context creation); it runs on every platform (OpenCL and CUDA
 * refuse a model whose device workspace per copy exceeds 256 MiB).
 *
 * The model is a SmoothFlow model file (docs/model-format.md).  It is loaded and
 * checked when the force is created: a missing, truncated or corrupt file, a
 * bad header or inconsistent tensors raise an OpenMMException naming the
 * problem.  The model's bytes are kept, so the force can be serialized and
 * copied without the file.
 *
 * The model describes one molecule of N atoms.  The force can be applied to
 * any number of copies of that molecule in a System (evaluated together as one
 * batch): each copy ("molecule") is a list of N particle indices, the particle
 * of model atom a at position a.  If no molecule is given, the force applies to
 * particles 0..N-1 of a System that has exactly N particles.
 *
 * Changes made after a Context was created (molecules, periodicity) take effect
 * only when the Context is reinitialized.
 */
class OPENMM_EXPORT_SMOOTHFLOW SmoothFlowForce : public OpenMM::Force {
public:
    /**
     * What happens when a bond or angle leaves the flow's support.
     */
    enum SupportPolicy {
        /** Evaluation fails with an exception naming the coordinate. */
        SupportError = 0,
        /** A smooth clamp plus a harmonic wall keeps the energy finite (docs/model-format.md section 5.2). */
        SupportWall = 1
    };
    /**
     * The precision the conditioner networks' weights are applied in.
     */
    enum WeightPrecision {
        /** The model's stored weights (the default). */
        WeightsFloat64 = 0,
        /** Every conditioner weight rounded to the nearest float32, then used in double
         *  arithmetic: a slightly different, exactly differentiated potential that streams half
         *  the bytes per molecule (docs/c-core.md, "Weight precision"). */
        WeightsFloat32 = 1
    };
    /**
     * What kind of flow the model file holds.
     */
    enum ModelKind {
        /** Coupling layers over a molecule's internal coordinates (a Z-matrix). */
        InternalCoordinateFlow = 0,
        /** A free-form flow's E(n)-equivariant encoder over N identical particles. */
        FreeFormFlow = 1
    };
    /**
     * Create a SmoothFlowForce from a model file.
     *
     * @param file    the path of a SmoothFlow model file (safetensors)
     */
    explicit SmoothFlowForce(const std::string& file);
    /**
     * Create a SmoothFlowForce from the bytes of a model file.
     *
     * @param modelBytes    the complete content of a SmoothFlow model file
     * @return a new SmoothFlowForce, owned by the caller (System::addForce takes it over)
     */
    static SmoothFlowForce* createFromBytes(const std::vector<char>& modelBytes);
    /**
     * Get the complete bytes of the model file.
     */
    const std::vector<char>& getModelBytes() const;
    /**
     * Get the number of atoms N of the model's molecule (of particles, for a free-form model).
     */
    int getNumModelAtoms() const;
    /**
     * Get what kind of flow the model holds.
     */
    ModelKind getModelKind() const;
    /**
     * Get the number of spatial dimensions d the model reads of each particle: 3, or 2 or 3
     * for a free-form model (a 2-dimensional one reads x and y and puts no force on z).
     */
    int getSpatialDimension() const;
    /**
     * Get the model's temperature T, in kelvin.
     */
    double getTemperature() const;
    /**
     * Get kT = R T of the model, in kJ/mol: the energy unit of -log p.
     */
    double getKT() const;
    /**
     * Get what happens when a bond or angle leaves the flow's support.
     */
    SupportPolicy getSupportPolicy() const;
    /**
     * Get whether the model file names its atoms (the header's "atoms" entry).
     * Without it the atom-name getters return empty names and index -1.
     */
    bool hasModelAtomInfo() const;
    /**
     * Get the name of a model atom (for example "CA").
     *
     * @param atom    the model atom index, between 0 and getNumModelAtoms()
     */
    const std::string& getModelAtomName(int atom) const;
    /**
     * Get the name of the residue a model atom belongs to (for example "ALA").
     *
     * @param atom    the model atom index, between 0 and getNumModelAtoms()
     */
    const std::string& getModelAtomResidueName(int atom) const;
    /**
     * Get the index, within the molecule and counting from 0, of the residue a
     * model atom belongs to.
     *
     * @param atom    the model atom index, between 0 and getNumModelAtoms()
     */
    int getModelAtomResidueIndex(int atom) const;
    /**
     * Get the model's configuration: the JSON object stored in the file's header.
     */
    const std::string& getModelConfig() const;
    /**
     * Make the force act on one molecule, replacing any molecules added before.
     *
     * @param particles    the System particle of each model atom, in model atom
     *                     order; exactly getNumModelAtoms() distinct indices
     */
    void setParticles(const std::vector<int>& particles);
    /**
     * Add a copy of the molecule the force acts on.
     *
     * @param particles    the System particle of each model atom, in model atom
     *                     order; exactly getNumModelAtoms() distinct indices
     * @return the index of the molecule that was added
     */
    int addMolecule(const std::vector<int>& particles);
    /**
     * Get the number of molecules added (0 means the default: particles 0..N-1).
     */
    int getNumMolecules() const;
    /**
     * Get the particles of a molecule.
     *
     * @param index    the index of the molecule, between 0 and getNumMolecules()
     * @return the System particle of each model atom, in model atom order
     */
    const std::vector<int>& getMoleculeParticles(int index) const;
    /**
     * Set the particles of a molecule.
     *
     * @param index        the index of the molecule, between 0 and getNumMolecules()
     * @param particles    the System particle of each model atom, in model atom
     *                     order; exactly getNumModelAtoms() distinct indices
     */
    void setMoleculeParticles(int index, const std::vector<int>& particles);
    /**
     * Set whether the force uses periodic boundary conditions.  If it does, the
     * internal coordinates are computed with the periodic box (minimum image),
     * so a molecule split across the box is handled.  A free-form model is not
     * periodic (its encoder sees every pair of particles at its plain distance):
     * a Context with such a force set periodic is refused.
     *
     * @param periodic    true to use periodic boundary conditions
     */
    void setUsesPeriodicBoundaryConditions(bool periodic);
    /**
     * Get whether the force uses periodic boundary conditions.
     */
    bool usesPeriodicBoundaryConditions() const override;
    /**
     * Set the precision the conditioner weights are applied in (WeightsFloat64 by default).
     * Like the molecules, it takes effect in a Context created, or reinitialized, after the
     * change.  A free-form model runs in float64 only: WeightsFloat32 is refused for it.
     *
     * @param precision    WeightsFloat64 or WeightsFloat32
     */
    void setWeightPrecision(WeightPrecision precision);
    /**
     * Get the precision the conditioner weights are applied in.
     */
    WeightPrecision getWeightPrecision() const;
    /**
     * Get how many internal coordinates were inside the wall zone, summed over
     * every evaluation so far in a Context (always 0 under SupportError).  Each
     * energy or force evaluation counts, including those that getState makes.
     *
     * @param context    a Context whose System contains this force
     */
    long long getWallCount(OpenMM::Context& context) const;
    /**
     * Get the loaded model as the C core's handle, shared and immutable: the
     * one part of this API that exposes a core type.  Platform kernels pass it
     * to sf_evaluate, and a C++ program may call any function of smoothflow.h
     * on it (include <smoothflow.h>, link libsmoothflow: the CMake target
     * smoothflow::smoothflow or pkg-config smoothflow).  It stays valid as long
     * as a copy of the pointer is held; never free it.  Not available from
     * Python.
     */
    std::shared_ptr<const sf_model> getModel() const;
protected:
    OpenMM::ForceImpl* createImpl() const override;
private:
    SmoothFlowForce(std::vector<char> modelBytes, const std::string& source);
    void checkMolecule(const std::vector<int>& particles) const;
    std::vector<char> modelBytes;
    std::shared_ptr<const sf_model> model;
    std::vector<std::string> atomNames, residueNames;
    std::vector<int> residueIndices;
    std::string config;
    std::vector<std::vector<int> > molecules;
    bool periodic;
    WeightPrecision weightPrecision;
};

} // namespace SmoothFlowPlugin

#endif /*OPENMM_SMOOTHFLOW_FORCE_H_*/
