/*
 * The Python interface of the SmoothFlow plugin: module openmmsmoothflow.smoothflow,
 * re-exported by the package openmmsmoothflow.
 *
 * OpenMM's own interface files are imported as belonging to module "openmm",
 * so SmoothFlowForce derives from openmm.Force: System.addForce accepts it and
 * Context, XmlSerializer and the unit typemaps work on it.
 */
%module(package="openmmsmoothflow") smoothflow

%import(module="openmm") "swig/OpenMMSwigHeaders.i"
%include "swig/typemaps.i"
%include <std_string.i>
%include <std_vector.i>

%{
/* Every class OpenMM's interface files declare, for the type casts SWIG emits. */
#include "OpenMM.h"
#include "OpenMMAmoeba.h"
#include "OpenMMDrude.h"
#include "openmm/RPMDIntegrator.h"
#include "openmm/RPMDMonteCarloBarostat.h"
#include "SmoothFlowForce.h"
#include <exception>
%}

/*
 * C++ exceptions become openmm.OpenMMException, the class OpenMM's own module
 * raises, so one `except openmm.OpenMMException` covers both.
 */
%exception {
    try {
        $action
    } catch (std::exception& e) {
        PyObject* type = NULL;
        PyObject* openmmModule = PyImport_ImportModule("openmm");
        if (openmmModule != NULL) {
            type = PyObject_GetAttrString(openmmModule, "OpenMMException");
            Py_DECREF(openmmModule);
        }
        if (type == NULL) {
            PyErr_Clear();
            PyErr_SetString(PyExc_Exception, e.what());
        }
        else {
            PyErr_SetString(type, e.what());
            Py_DECREF(type);
        }
        SWIG_fail;
    }
}

namespace std {
    %template(vectori) vector<int>;
}

/* Python bytes (or anything with the buffer protocol) as model bytes. */
%typemap(in) const std::vector<char>& (std::vector<char> temp, Py_buffer view) {
    if (PyObject_GetBuffer($input, &view, PyBUF_CONTIG_RO) != 0)
        SWIG_exception_fail(SWIG_TypeError, "the model must be given as bytes");
    const char* data = static_cast<const char*>(view.buf);
    temp.assign(data, data + view.len);
    PyBuffer_Release(&view);
    $1 = &temp;
}
%typemap(typecheck, precedence=SWIG_TYPECHECK_POINTER) const std::vector<char>& {
    $1 = PyObject_CheckBuffer($input) ? 1 : 0;
}
%typemap(out) const std::vector<char>& {
    $result = PyBytes_FromStringAndSize($1->data(), $1->size());
}

%newobject SmoothFlowPlugin::SmoothFlowForce::createFromBytes;

/* cast() returns the same C++ object as its argument, which may own it (a
 * Force from XmlSerializer.deserialize does): keep the argument alive. */
%pythonappend SmoothFlowPlugin::SmoothFlowForce::cast %{
    val._castFrom = force
%}

/* The model file as str, bytes or os.PathLike, in the file system's encoding. */
%typemap(in) const std::string& file (std::string temp, PyObject* encoded = NULL) {
    if (!PyUnicode_FSConverter($input, &encoded))
        SWIG_fail;
    temp.assign(PyBytes_AS_STRING(encoded), PyBytes_GET_SIZE(encoded));
    Py_DECREF(encoded);
    $1 = &temp;
}
%typemap(freearg) const std::string& file ""

/* The class itself comes from its header, so the Python docstrings are its
 * doc comments (swig -doxygen); the kernels' accessor stays C++-only. */
#define OPENMM_EXPORT_SMOOTHFLOW
%ignore SmoothFlowPlugin::SmoothFlowForce::getModel;
%ignore sf_model;

%extend SmoothFlowPlugin::SmoothFlowForce {
    /* System.getForce(i) returns a plain openmm.Force: cast it back. */
    static SmoothFlowPlugin::SmoothFlowForce& cast(OpenMM::Force& force) {
        SmoothFlowPlugin::SmoothFlowForce* result = dynamic_cast<SmoothFlowPlugin::SmoothFlowForce*>(&force);
        if (result == NULL)
            throw OpenMM::OpenMMException("SmoothFlowForce.cast: the Force is a " + force.getName() + ", not a SmoothFlowForce");
        return *result;
    }
    /* Whether a Force (for example from System.getForce) is a SmoothFlowForce. */
    static bool isinstance(OpenMM::Force& force) {
        return dynamic_cast<SmoothFlowPlugin::SmoothFlowForce*>(&force) != NULL;
    }
}

%include "SmoothFlowForce.h"
