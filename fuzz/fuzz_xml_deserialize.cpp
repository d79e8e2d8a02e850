// fuzz_xml_deserialize.cpp -- libFuzzer target: OpenMM's XmlSerializer
// reading a SmoothFlowForce (serialization/src/SmoothFlowForceProxy.cpp: the
// version, base64 model, its SHA-256, molecules).
//
// A force that deserializes is serialized again and read back: the second
// reading must succeed and give the same XML (the proxy's round trip is
// stable).  OpenMMException is the expected way to refuse an input; any other
// exception, a crash or a sanitizer report is a finding.
//
// XmlSerializer::deserialize<T> casts whatever object the root element's
// "type" names to T, so the harness first makes sure that the only attribute
// named type is type="SmoothFlowForce" (otherwise a System in the input would
// be used as a force: a bug of the harness, not of the plugin).  It also
// skips inputs that do not end with the closing </Force>: OpenMM's XML reader
// (irrXML inside libOpenMM) reads past the end of a truncated document and
// crashes (found by this target; tests/data/fuzz_regression/xml/
// openmm_irrxml_truncated.xml), a bug of OpenMM for every force, not of this
// plugin's proxy.
//
// Built two ways: with clang -fsanitize=fuzzer by scripts/fuzz.sh, and with
// regression_main.c as a plain program replaying tests/data/fuzz_regression/xml.
#include "SmoothFlowForce.h"
#include "openmm/OpenMMException.h"
#include "openmm/serialization/XmlSerializer.h"

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <sstream>
#include <string>

using namespace OpenMM;
using SmoothFlowPlugin::SmoothFlowForce;

static void finding(const std::string& what) {
    std::fprintf(stderr, "fuzz_xml_deserialize: %s\n", what.c_str());
    std::abort();
}

// True when exactly one attribute named "type" appears (any byte <= ' '
// before it, optional blanks, '=') and its value is SmoothFlowForce.
static bool onlySmoothFlowForce(const std::string& xml) {
    int found = 0;
    bool ours = false;
    for (size_t at = xml.find("type"); at != std::string::npos; at = xml.find("type", at + 1)) {
        if (at == 0 || static_cast<unsigned char>(xml[at - 1]) > ' ')
            continue;
        size_t p = at + 4;
        while (p < xml.size() && static_cast<unsigned char>(xml[p]) <= ' ')
            p++;
        if (p >= xml.size() || xml[p] != '=')
            continue;
        found++;
        p++;
        while (p < xml.size() && static_cast<unsigned char>(xml[p]) <= ' ')
            p++;
        ours = xml.compare(p, 17, "\"SmoothFlowForce\"") == 0 || xml.compare(p, 17, "'SmoothFlowForce'") == 0;
    }
    return found == 1 && ours;
}

// True when the document ends with </Force> and blanks.
static bool closed(const std::string& xml) {
    size_t end = xml.size();
    while (end > 0 && static_cast<unsigned char>(xml[end - 1]) <= ' ')
        end--;
    return end >= 8 && xml.compare(end - 8, 8, "</Force>") == 0;
}

static std::string toXml(const SmoothFlowForce& force) {
    std::stringstream out;
    XmlSerializer::serialize<SmoothFlowForce>(&force, "Force", out);
    return out.str();
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    std::string xml(reinterpret_cast<const char*>(data), size);
    if (!onlySmoothFlowForce(xml) || !closed(xml))
        return 0;
    std::unique_ptr<SmoothFlowForce> force;
    try {
        std::istringstream in(xml);
        force.reset(XmlSerializer::deserialize<SmoothFlowForce>(in));
    }
    catch (const OpenMMException&) {
        return 0;
    }
    catch (const std::exception& e) {
        finding(std::string("exception other than OpenMMException: ") + e.what());
    }
    if (!force)
        finding("deserialize returned no force and no error");
    // Everything the force reports must be readable.
    int atoms = force->getNumModelAtoms();
    for (int m = 0; m < force->getNumMolecules(); m++)
        if (static_cast<int>(force->getMoleculeParticles(m).size()) != atoms)
            finding("a molecule whose size is not the model's atom count was accepted");
    if (force->hasModelAtomInfo())
        for (int a = 0; a < atoms; a++)
            (void)force->getModelAtomName(a);
    std::string first = toXml(*force);
    std::unique_ptr<SmoothFlowForce> again;
    try {
        std::istringstream in(first);
        again.reset(XmlSerializer::deserialize<SmoothFlowForce>(in));
    }
    catch (const std::exception& e) {
        finding(std::string("a force's own XML does not read back: ") + e.what());
    }
    if (toXml(*again) != first)
        finding("serialize -> deserialize -> serialize changed the XML");
    return 0;
}
