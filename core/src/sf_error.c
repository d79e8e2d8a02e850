/* sf_error.c -- status codes and error messages. */
#include "sf_internal.h"

#include <stdarg.h>
#include <stdio.h>

const char *sf_status_string(sf_status code)
{
    switch (code) {
    case SF_OK: return "ok";
    case SF_ERR_ARG: return "invalid argument";
    case SF_ERR_NOMEM: return "out of memory";
    case SF_ERR_IO: return "cannot read model file";
    case SF_ERR_FORMAT: return "model file is corrupt";
    case SF_ERR_VERSION: return "unsupported model format version";
    case SF_ERR_MODEL: return "model architecture is inconsistent";
    case SF_ERR_VALUE: return "model holds non-finite or out-of-bound values";
    case SF_ERR_INPUT: return "non-finite positions or box";
    case SF_ERR_SUPPORT: return "configuration outside the flow's support";
    case SF_ERR_GEOMETRY: return "degenerate geometry";
    case SF_ERR_NUMERIC: return "numerical failure";
    }
    return "unknown status";
}

sf_status sfE_set(sf_error *err, sf_status code, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        err->code = code;
        err->molecule = -1;
        err->atoms[0] = err->atoms[1] = err->atoms[2] = err->atoms[3] = -1;
        va_start(ap, fmt);
        vsnprintf(err->message, sizeof err->message, fmt, ap);
        va_end(ap);
    }
    return code;
}

sf_status sfE_locate(sf_error *err, sf_status code, int molecule, int a, int b, int c, int d)
{
    if (err) {
        err->molecule = molecule;
        err->atoms[0] = a;
        err->atoms[1] = b;
        err->atoms[2] = c;
        err->atoms[3] = d;
    }
    return code;
}
