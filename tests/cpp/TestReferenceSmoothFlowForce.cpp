/*
 * Tests of SmoothFlowForce on the Reference platform: energies and forces
 * against the core and against PyTorch (fixtures from tests/data), finite
 * differences, several molecules, force groups, periodic boxes, the wall
 * count, and every error the force reports.
 */

#include "ReferenceSmoothFlowKernelFactory.h"
#include "SmoothFlowForce.h"
#include "SmoothFlowTestUtilities.h"
#include "openmm/Context.h"
#include "openmm/Platform.h"
#include "openmm/State.h"
#include "openmm/System.h"
#include "openmm/VerletIntegrator.h"
#include "smoothflow.h"
#include <cmath>
#include <iostream>
#include <limits>
#include <map>
#include <memory>
#include <set>

using namespace SmoothFlowPlugin;
using namespace SmoothFlowTest;
using namespace OpenMM;
using namespace std;

static const double MOLAR_GAS_CONSTANT = 0.00831446261815324;  // kJ/mol/K

static System* createSystem(int numParticles, Force* force) {
    System* system = new System();
    for (int i = 0; i < numParticles; i++)
        system->addParticle(12.0);
    if (force != nullptr)
        system->addForce(force);
    return system;
}

static State evaluate(Context& context, const vector<Vec3>& positions, int groups = -1) {
    context.setPositions(positions);
    return context.getState(State::Energy | State::Forces, false, groups);
}

static void testGetters() {
    SmoothFlowForce tiny(dataFile("tiny.safetensors"));
    ASSERT_EQUAL(6, tiny.getNumModelAtoms());
    ASSERT_EQUAL_TOL(300.0, tiny.getTemperature(), 1e-15);
    ASSERT_EQUAL_TOL(MOLAR_GAS_CONSTANT * 300.0, tiny.getKT(), 1e-15);
    ASSERT_EQUAL(SmoothFlowForce::SupportError, tiny.getSupportPolicy());
    ASSERT(tiny.hasModelAtomInfo());
    ASSERT_EQUAL("C1", tiny.getModelAtomName(0));
    ASSERT_EQUAL("ACE", tiny.getModelAtomResidueName(0));
    ASSERT_EQUAL(0, tiny.getModelAtomResidueIndex(0));
    ASSERT_EQUAL("H", tiny.getModelAtomName(4));
    ASSERT_EQUAL("NME", tiny.getModelAtomResidueName(4));
    ASSERT_EQUAL(1, tiny.getModelAtomResidueIndex(4));
    ASSERT(tiny.getModelConfig().find("\"zmatrix\"") != string::npos);
    ASSERT(tiny.getModelBytes() == readBytes(dataFile("tiny.safetensors")));
    ASSERT_EQUAL(0, tiny.getNumMolecules());
    ASSERT(!tiny.usesPeriodicBoundaryConditions());
    ASSERT_THROWS(tiny.getModelAtomName(6), "model atom index 6", "out of range");

    unique_ptr<SmoothFlowForce> wall(SmoothFlowForce::createFromBytes(readBytes(dataFile("wall.safetensors"))));
    ASSERT_EQUAL(8, wall->getNumModelAtoms());
    ASSERT_EQUAL(SmoothFlowForce::SupportWall, wall->getSupportPolicy());
    ASSERT(!wall->hasModelAtomInfo());
    ASSERT_EQUAL("", wall->getModelAtomName(3));
    ASSERT_EQUAL(-1, wall->getModelAtomResidueIndex(3));
}

/** Energies and forces equal PyTorch's (the fixtures) and the core's own sf_evaluate. */
static void testMatchesReference(const string& model) {
    vector<Configuration> reference = readReference(dataFile(model + ".reference.txt"));
    SmoothFlowForce* force = new SmoothFlowForce(dataFile(model + ".safetensors"));
    int numAtoms = force->getNumModelAtoms();
    unique_ptr<System> system(createSystem(numAtoms, force));
    VerletIntegrator integrator(0.001);
    Context context(*system, integrator, Platform::getPlatformByName("Reference"));

    sf_workspace* workspace = nullptr;
    ASSERT_EQUAL(SF_OK, sf_workspace_new(force->getModel().get(), 1, &workspace, nullptr));
    for (const Configuration& c : reference) {
        State state = evaluate(context, c.positions);
        ASSERT_EQUAL_TOL(c.energy, state.getPotentialEnergy(), 1e-10);
        for (int i = 0; i < numAtoms; i++)
            ASSERT_EQUAL_VEC(c.forces[i], state.getForces()[i], 1e-8);

        vector<double> x, f(3 * numAtoms);
        for (const Vec3& p : c.positions)
            x.insert(x.end(), {p[0], p[1], p[2]});
        double energy;
        ASSERT_EQUAL(SF_OK, sf_evaluate(force->getModel().get(), workspace, 1, x.data(), nullptr, &energy, f.data(), nullptr, nullptr));
        ASSERT_EQUAL_TOL(energy, state.getPotentialEnergy(), 1e-13);
        for (int i = 0; i < numAtoms; i++)
            ASSERT_EQUAL_VEC(Vec3(f[3 * i], f[3 * i + 1], f[3 * i + 2]), state.getForces()[i], 1e-13);
    }
    sf_workspace_free(workspace);
}

/**
 * The forces are the negative gradient of the energy: fourth-order central
 * differences (the random test flows are steep, so second order would need
 * a step too small for the energy's rounding).
 */
static void testFiniteDifferences(const string& model, int configuration) {
    Configuration c = readReference(dataFile(model + ".reference.txt"))[configuration];
    SmoothFlowForce* force = new SmoothFlowForce(dataFile(model + ".safetensors"));
    int numAtoms = force->getNumModelAtoms();
    unique_ptr<System> system(createSystem(numAtoms, force));
    VerletIntegrator integrator(0.001);
    Context context(*system, integrator, Platform::getPlatformByName("Reference"));
    vector<Vec3> forces = evaluate(context, c.positions).getForces();
    const double h = 1e-6;
    double error = 0.0, norm = 0.0;
    for (int i = 0; i < numAtoms; i++)
        for (int k = 0; k < 3; k++) {
            double energy[4];
            const double steps[4] = {2 * h, h, -h, -2 * h};
            for (int s = 0; s < 4; s++) {
                vector<Vec3> x = c.positions;
                x[i][k] += steps[s];
                energy[s] = evaluate(context, x).getPotentialEnergy();
            }
            double derivative = (-energy[0] + 8 * energy[1] - 8 * energy[2] + energy[3]) / (12 * h);
            double difference = -derivative - forces[i][k];
            error += difference * difference;
            norm += forces[i][k] * forces[i][k];
        }
    if (!(sqrt(error) <= 1e-6 * max(1.0, sqrt(norm))))
        throwException(__FILE__, __LINE__, model + ": finite differences differ from the forces by " + to_string(sqrt(error)) +
                       " (|F| = " + to_string(sqrt(norm)) + ")");
}

/** Several copies in one System, mapped onto scattered particles, are one batch. */
static void testMultipleMolecules() {
    vector<Configuration> reference = readReference(dataFile("tiny.reference.txt"));
    SmoothFlowForce* force = new SmoothFlowForce(dataFile("tiny.safetensors"));
    const int numAtoms = 6, numMolecules = 3, numParticles = numAtoms * numMolecules + 2;
    // Molecule m's atom a sits at particle (a * numMolecules + m + 1) % numParticles:
    // interleaved, in no particular order, leaving two particles unused.
    vector<Vec3> positions(numParticles, Vec3(5.0, 5.0, 5.0));
    positions[numParticles - 1] = Vec3(-5.0, 1.0, 2.0);
    double expectedEnergy = 0.0;
    for (int m = 0; m < numMolecules; m++) {
        vector<int> particles;
        for (int a = 0; a < numAtoms; a++) {
            int p = (a * numMolecules + m + 1) % numParticles;
            particles.push_back(p);
            positions[p] = reference[m].positions[a] + Vec3(3.0 * m, 0, 0);
        }
        ASSERT_EQUAL(m, force->addMolecule(particles));
        expectedEnergy += reference[m].energy;
    }
    ASSERT_EQUAL(numMolecules, force->getNumMolecules());
    unique_ptr<System> system(createSystem(numParticles, force));
    VerletIntegrator integrator(0.001);
    Context context(*system, integrator, Platform::getPlatformByName("Reference"));
    State state = evaluate(context, positions);
    ASSERT_EQUAL_TOL(expectedEnergy, state.getPotentialEnergy(), 1e-10);
    set<int> used;
    for (int m = 0; m < numMolecules; m++)
        for (int a = 0; a < numAtoms; a++) {
            int p = force->getMoleculeParticles(m)[a];
            used.insert(p);
            ASSERT_EQUAL_VEC(reference[m].forces[a], state.getForces()[p], 1e-8);
        }
    for (int p = 0; p < numParticles; p++)
        if (used.count(p) == 0)
            ASSERT_EQUAL_VEC(Vec3(), state.getForces()[p], 0.0);

    // The Z-matrix bonds make each copy one OpenMM molecule (kept whole by
    // periodic wrapping and barostats).
    for (const vector<int>& molecule : context.getMolecules()) {
        set<int> members(molecule.begin(), molecule.end());
        for (int m = 0; m < numMolecules; m++) {
            const vector<int>& particles = force->getMoleculeParticles(m);
            int inside = 0;
            for (int p : particles)
                inside += members.count(p);
            ASSERT(inside == 0 || inside == numAtoms);
        }
    }

    // setMoleculeParticles changes one copy; setParticles leaves one.
    force->setMoleculeParticles(1, force->getMoleculeParticles(1));
    force->setParticles(force->getMoleculeParticles(2));
    ASSERT_EQUAL(1, force->getNumMolecules());
}

static void testForceGroups() {
    Configuration c = readReference(dataFile("tiny.reference.txt"))[0];
    SmoothFlowForce* force = new SmoothFlowForce(dataFile("tiny.safetensors"));
    force->setForceGroup(3);
    unique_ptr<System> system(createSystem(6, force));
    VerletIntegrator integrator(0.001);
    Context context(*system, integrator, Platform::getPlatformByName("Reference"));
    ASSERT_EQUAL_TOL(c.energy, evaluate(context, c.positions, 1 << 3).getPotentialEnergy(), 1e-10);
    State other = evaluate(context, c.positions, 1 << 0);
    ASSERT_EQUAL(0.0, other.getPotentialEnergy());
    ASSERT_EQUAL_VEC(Vec3(), other.getForces()[0], 0.0);
}

/** Periodic: translating the molecule, or one atom, by box vectors changes nothing. */
static void testPeriodic() {
    Configuration c = readReference(dataFile("tiny.reference.txt"))[1];
    SmoothFlowForce* force = new SmoothFlowForce(dataFile("tiny.safetensors"));
    force->setUsesPeriodicBoundaryConditions(true);
    ASSERT(force->usesPeriodicBoundaryConditions());
    unique_ptr<System> system(createSystem(6, force));
    Vec3 a(2.5, 0, 0), b(0.4, 2.6, 0), cc(-0.3, 0.5, 2.7);  // triclinic, reduced form
    system->setDefaultPeriodicBoxVectors(a, b, cc);
    ASSERT(system->usesPeriodicBoundaryConditions());
    VerletIntegrator integrator(0.001);
    Context context(*system, integrator, Platform::getPlatformByName("Reference"));
    State reference = evaluate(context, c.positions);
    ASSERT_EQUAL_TOL(c.energy, reference.getPotentialEnergy(), 1e-10);
    for (Vec3 shift : {a, b, cc, a * 2 - b + cc * 3, cc * -1}) {
        vector<Vec3> x = c.positions;
        for (Vec3& p : x)
            p += shift;
        State state = evaluate(context, x);
        ASSERT_EQUAL_TOL(reference.getPotentialEnergy(), state.getPotentialEnergy(), 1e-10);
        for (int i = 0; i < 6; i++)
            ASSERT_EQUAL_VEC(reference.getForces()[i], state.getForces()[i], 1e-8);
        x = c.positions;
        x[2] += shift;  // split across the box: minimum image bonds
        state = evaluate(context, x);
        ASSERT_EQUAL_TOL(reference.getPotentialEnergy(), state.getPotentialEnergy(), 1e-10);
        for (int i = 0; i < 6; i++)
            ASSERT_EQUAL_VEC(reference.getForces()[i], state.getForces()[i], 1e-8);
    }
}

/* ---- configurations built from chosen internal coordinates (wall count) ---- */

/** Dihedral angle a-b-c-d in (-pi, pi] (IUPAC sign). */
static double dihedral(Vec3 a, Vec3 b, Vec3 c, Vec3 d) {
    Vec3 b1 = b - a, b2 = c - b, b3 = d - c;
    Vec3 n1 = b1.cross(b2), n2 = b2.cross(b3);
    return atan2(b2.dot(n1.cross(n2)) / sqrt(b2.dot(b2)), n1.dot(n2));
}

/** Internal coordinates q (nm, radians) of a model's Z-matrix: bonds, angles, torsions. */
static vector<double> internalCoordinates(const sf_model* model, const vector<Vec3>& x) {
    int n = sf_model_num_atoms(model);
    vector<double> q(3 * n - 6);
    for (int r = 1; r < n; r++) {
        int row[4];
        sf_model_zmatrix_row(model, r, row);
        Vec3 ij = x[row[0]] - x[row[1]];
        q[r - 1] = sqrt(ij.dot(ij));
        if (r >= 2) {
            Vec3 kj = x[row[2]] - x[row[1]];
            q[n - 1 + r - 2] = acos(ij.dot(kj) / sqrt(ij.dot(ij) * kj.dot(kj)));
        }
        if (r >= 3)
            q[2 * n - 3 + r - 3] = dihedral(x[row[0]], x[row[1]], x[row[2]], x[row[3]]);
    }
    return q;
}

/** Positions with internal coordinates q (the inverse of internalCoordinates, up to a rigid motion). */
static vector<Vec3> cartesian(const sf_model* model, const vector<double>& q) {
    int n = sf_model_num_atoms(model);
    vector<Vec3> x(n);
    for (int r = 0; r < n; r++) {
        int row[4];
        sf_model_zmatrix_row(model, r, row);
        if (r == 0)
            continue;
        double bond = q[r - 1], angle = r >= 2 ? q[n - 1 + r - 2] : 0, torsion = r >= 3 ? q[2 * n - 3 + r - 3] : 0;
        Vec3 j = x[row[1]], k = r >= 2 ? x[row[2]] : j + Vec3(1, 0, 0), l = r >= 3 ? x[row[3]] : k + Vec3(0, 1, 0);
        // NeRF: i at distance bond from j, angle i-j-k, dihedral i-j-k-l.
        Vec3 bc = (j - k) / sqrt((j - k).dot(j - k)), nrm = (k - l).cross(bc);
        nrm = nrm / sqrt(nrm.dot(nrm));
        Vec3 m = nrm.cross(bc);
        x[row[0]] = j + bc * (-bond * cos(angle)) + m * (bond * sin(angle) * cos(torsion)) + nrm * (bond * sin(angle) * sin(torsion));
    }
    return x;
}

/**
 * Configurations with exactly the wanted internal coordinates in the wall
 * zone (u < 2 margin or u > 1 - 2 margin; bonds and angles only): start from
 * a fixture configuration, set the chosen coordinates' u, rebuild the
 * positions.  A bond's u = (q - lo) / (hi - lo): lo and hi are fitted from two
 * configurations of the fixture.
 */
class WallZoneBuilder {
public:
    WallZoneBuilder(const sf_model* model, const vector<Vec3>& x0, const vector<Vec3>& x1) : model(model), x0(x0) {
        int n = sf_model_num_atoms(model);
        q0 = internalCoordinates(model, x0);
        vector<double> q1 = internalCoordinates(model, x1);
        u0 = uOf(x0);
        vector<double> u1 = uOf(x1);
        for (int d = 0; d < n - 1; d++) {
            scale.push_back((q1[d] - q0[d]) / (u1[d] - u0[d]));
            offset.push_back(q0[d] - u0[d] * scale[d]);
        }
    }
    vector<double> uOf(const vector<Vec3>& x) const {
        vector<double> flat, u(3 * x.size() - 6);
        for (const Vec3& p : x)
            flat.insert(flat.end(), {p[0], p[1], p[2]});
        ASSERT_EQUAL(SF_OK, sf_internal_coordinates(model, flat.data(), nullptr, u.data(), nullptr));
        return u;
    }
    /** x0 with coordinate d (bond or angle) set to u = value[d] for every entry of value. */
    vector<Vec3> build(const map<int, double>& value) const {
        int n = sf_model_num_atoms(model);
        vector<double> q = q0;
        for (const auto& entry : value)
            q[entry.first] = entry.first < n - 1 ? offset[entry.first] + entry.second * scale[entry.first] : M_PI * entry.second;
        vector<Vec3> x = cartesian(model, q);
        // The construction did what it claims: these coordinates moved, no other.
        vector<double> u = uOf(x);
        for (size_t d = 0; d < u.size(); d++) {
            double want = value.count(d) ? value.at(d) : u0[d];
            double gap = fabs(u[d] - want);
            if (d >= (size_t) 2 * n - 3)
                gap = min(gap, 1 - gap);
            if (!(gap < 1e-9))
                throwException(__FILE__, __LINE__, "built u[" + to_string(d) + "] = " + to_string(u[d]) + ", wanted " + to_string(want));
        }
        return x;
    }
    vector<double> u0;
private:
    const sf_model* model;
    vector<Vec3> x0;
    vector<double> q0, scale, offset;
};

/** The wall policy counts, per evaluation, exactly the bonds and angles in its zone; the error policy never counts. */
static void testWallCount() {
    vector<Configuration> reference = readReference(dataFile("wall.reference.txt"));
    SmoothFlowForce* force = new SmoothFlowForce(dataFile("wall.safetensors"));
    const int n = force->getNumModelAtoms();
    unique_ptr<System> system(createSystem(n, force));
    VerletIntegrator integrator(0.001);
    Context context(*system, integrator, Platform::getPlatformByName("Reference"));
    WallZoneBuilder builder(force->getModel().get(), reference[0].positions, reference[1].positions);
    // make_fixtures.py: margin 0.05, so the zone is u < 0.1 or u > 0.9;
    // configuration 0 has every u in [0.1, 0.9].
    for (int d = 0; d < 2 * n - 3; d++)
        ASSERT(builder.u0[d] > 0.1 && builder.u0[d] < 0.9);
    ASSERT_EQUAL(0, force->getWallCount(context));
    evaluate(context, reference[0].positions);
    ASSERT_EQUAL(0, force->getWallCount(context));
    const int angle = n - 1;  // the first angle's dimension
    struct Case {
        map<int, double> u;
        int inZone;
    };
    const vector<Case> cases = {
        {{{0, 0.05}}, 1},                                           // one bond near its lower bound
        {{{0, 0.05}, {3, 0.97}, {5, 0.02}}, 3},                     // three bonds, both ends
        {{{1, 1.3}, {2, -0.2}}, 2},                                 // two bonds beyond the support
        {{{2, 0.095}, {4, 0.105}, {6, 0.5}}, 1},                    // just inside and just outside the zone
        {{{angle, 0.95}, {angle + 2, 0.06}}, 2},                    // two angles (171 and 11 degrees)
        {{{0, 1.2}, {angle + 1, 0.93}, {angle + 3, 0.5}}, 2},       // a bond and an angle
    };
    long long before = force->getWallCount(context);
    for (const Case& c : cases) {
        vector<Vec3> x = builder.build(c.u);
        evaluate(context, x);
        ASSERT_EQUAL(before + c.inZone, force->getWallCount(context));
        before = force->getWallCount(context);
        // An energy-only evaluation counts as well.
        context.getState(State::Energy);
        ASSERT_EQUAL(before + c.inZone, force->getWallCount(context));
        before = force->getWallCount(context);
    }

    // Under the error policy nothing is ever counted, even at u inside what
    // would be the zone (tiny's margin is 0.01 by default: u < 0.02).
    SmoothFlowForce* tiny = new SmoothFlowForce(dataFile("tiny.safetensors"));
    vector<Configuration> tinyReference = readReference(dataFile("tiny.reference.txt"));
    unique_ptr<System> tinySystem(createSystem(6, tiny));
    VerletIntegrator tinyIntegrator(0.001);
    Context tinyContext(*tinySystem, tinyIntegrator, Platform::getPlatformByName("Reference"));
    WallZoneBuilder tinyBuilder(tiny->getModel().get(), tinyReference[0].positions, tinyReference[1].positions);
    for (const map<int, double>& u : {map<int, double>{{0, 0.005}}, map<int, double>{{1, 0.995}, {5, 0.01}}}) {
        evaluate(tinyContext, tinyBuilder.build(u));
        ASSERT_EQUAL(0, tiny->getWallCount(tinyContext));
    }
}

static void testModelErrors() {
    ASSERT_THROWS(SmoothFlowForce("no/such/model.safetensors"), "cannot open", "no/such/model.safetensors");
    ASSERT_THROWS(delete SmoothFlowForce::createFromBytes(vector<char>{'n', 'o', 't', ' ', 'a', ' ', 'm', 'o', 'd', 'e', 'l'}),
                  "SmoothFlowForce: cannot load model bytes: ");
    vector<char> truncated = readBytes(dataFile("tiny.safetensors"));
    truncated.resize(truncated.size() - 100);
    ASSERT_THROWS(delete SmoothFlowForce::createFromBytes(truncated), "SmoothFlowForce: cannot load model bytes: ");
    ASSERT_THROWS(delete SmoothFlowForce::createFromBytes(vector<char>()), "SmoothFlowForce: cannot load model bytes: ");
}

static void testParticleErrors() {
    SmoothFlowForce force(dataFile("tiny.safetensors"));
    ASSERT_THROWS(force.setParticles({0, 1, 2, 3, 4}), "exactly 6", "5 were given");
    ASSERT_THROWS(force.addMolecule({0, 1, 2, 3, 4, 5, 6}), "exactly 6", "7 were given");
    ASSERT_THROWS(force.setParticles({0, 1, 2, 3, 4, 2}), "particle 2 appears twice");
    ASSERT_THROWS(force.setParticles({0, 1, 2, 3, -4, 5}), "-4", "negative");
    ASSERT_THROWS(force.getMoleculeParticles(0), "molecule index 0", "out of range");
    ASSERT_THROWS(force.setMoleculeParticles(1, {0, 1, 2, 3, 4, 5}), "molecule index 1", "out of range");
    VerletIntegrator integrator(0.001);
    Platform& platform = Platform::getPlatformByName("Reference");

    // Default mapping with the wrong number of particles.
    {
        unique_ptr<System> system(createSystem(7, new SmoothFlowForce(dataFile("tiny.safetensors"))));
        ASSERT_THROWS(Context(*system, integrator, platform), "6 atoms", "7 particles", "setParticles");
    }
    // An index beyond the System.
    {
        SmoothFlowForce* f = new SmoothFlowForce(dataFile("tiny.safetensors"));
        f->setParticles({0, 1, 2, 3, 4, 10});
        unique_ptr<System> system(createSystem(6, f));
        ASSERT_THROWS(Context(*system, integrator, platform), "particle index 10", "out of range", "6 particles");
    }
    // A particle in two molecules.
    {
        SmoothFlowForce* f = new SmoothFlowForce(dataFile("tiny.safetensors"));
        f->addMolecule({0, 1, 2, 3, 4, 5});
        f->addMolecule({6, 7, 8, 9, 10, 3});
        unique_ptr<System> system(createSystem(11, f));
        ASSERT_THROWS(Context(*system, integrator, platform), "particle 3 is used twice", "molecule 0", "molecule 1");
    }
}

static void testEvaluationErrors() {
    Configuration c = readReference(dataFile("tiny.reference.txt"))[0];
    unique_ptr<System> system(createSystem(6, new SmoothFlowForce(dataFile("tiny.safetensors"))));
    VerletIntegrator integrator(0.001);
    Context context(*system, integrator, Platform::getPlatformByName("Reference"));
    vector<Vec3> x = c.positions;
    x[4][1] = numeric_limits<double>::quiet_NaN();
    ASSERT_THROWS(evaluate(context, x), "SmoothFlowForce: evaluation failed", "not finite");
    // Stretched to three times its size, every bond leaves the support.
    x = c.positions;
    for (Vec3& p : x)
        p *= 3.0;
    ASSERT_THROWS(evaluate(context, x), "SmoothFlowForce: evaluation failed", "support");
    // And the Context still works afterwards.
    ASSERT_EQUAL_TOL(c.energy, evaluate(context, c.positions).getPotentialEnergy(), 1e-10);
}

int main() {
    try {
        registerSmoothFlowReferenceKernelFactories();
        testGetters();
        testMatchesReference("tiny");
        testMatchesReference("wall");
        testFiniteDifferences("tiny", 0);
        testFiniteDifferences("tiny", 3);
        testFiniteDifferences("wall", 1);
        testFiniteDifferences("wall", 3);  // in the wall zone
        testFiniteDifferences("wall", 4);  // beyond the support
        testMultipleMolecules();
        testForceGroups();
        testPeriodic();
        testWallCount();
        testModelErrors();
        testParticleErrors();
        testEvaluationErrors();
    }
    catch (const exception& e) {
        cout << "exception: " << e.what() << endl;
        return 1;
    }
    cout << "Done" << endl;
    return 0;
}
