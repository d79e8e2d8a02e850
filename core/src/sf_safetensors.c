/* sf_safetensors.c -- the safetensors container: header, tensor table
 * (docs/model-format.md section 1, whose rules this file enforces exactly). */
#include "sf_internal.h"

#include <cJSON.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

void sfS_free(sf_safetensors *st)
{
    if (!st) return;
    for (int i = 0; i < st->n_tensors; i++) free(st->tensors[i].name);
    free(st->tensors);
    free(st->metadata_format);
    free(st->metadata_version);
    free(st->metadata_config);
    memset(st, 0, sizeof *st);
}

sf_tensor *sfS_find(sf_safetensors *st, const char *name)
{
    for (int i = 0; i < st->n_tensors; i++)
        if (strcmp(st->tensors[i].name, name) == 0) return &st->tensors[i];
    return NULL;
}

void sfS_read_doubles(const sf_tensor *t, double *dst, size_t count)
{
    /* Little-endian on disk; memcpy keeps unaligned reads legal. */
    for (size_t i = 0; i < count; i++) {
        if (t->dtype == SF_DTYPE_F64) {
            double v;
            memcpy(&v, t->data + 8 * i, 8);
            dst[i] = v;
        } else {
            float v;
            memcpy(&v, t->data + 4 * i, 4);
            dst[i] = (double)v;
        }
    }
}

/* ------------------------------------------------------------ the text */

/* Whether s[0..n) is well-formed UTF-8 (RFC 3629: no overlong forms, no
 * surrogates, nothing above U+10FFFF).  cJSON does not check; the Python
 * reader decodes strictly, so both must refuse the same bytes. */
static int valid_utf8(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        size_t len;
        unsigned min, cp;
        if (c < 0x80) { i++; continue; }
        if (c >= 0xC2 && c <= 0xDF) { len = 2; min = 0x80; cp = c & 0x1F; }
        else if (c >= 0xE0 && c <= 0xEF) { len = 3; min = 0x800; cp = c & 0x0F; }
        else if (c >= 0xF0 && c <= 0xF4) { len = 4; min = 0x10000; cp = c & 0x07; }
        else return 0;
        if (n - i < len) return 0;
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xC0) != 0x80) return 0;
            cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
        i += len;
    }
    return 1;
}

/* What the header's text holds that the format does not allow, or NULL.
 * Strings: no raw control character, no \u0000 (C strings end there).
 * Outside strings only JSON structure, whitespace and non-negative integers
 * in plain digits (no leading zero): a header's numbers are shapes and byte
 * offsets, and true, false, null, signs, fractions and exponents have no
 * place in it.  cJSON checks the rest of the grammar. */
static const char *header_text_problem(const char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"') {
            for (i++; i < n && s[i] != '"'; i++) {
                if ((unsigned char)s[i] < 0x20) return "a raw control character inside a string";
                if (s[i] == '\\' && i + 1 < n) {
                    if (s[i + 1] == 'u' && i + 5 < n && memcmp(s + i + 2, "0000", 4) == 0)
                        return "a NUL character (\\u0000) in a string";
                    i++; /* a backslash escapes exactly one character */
                }
            }
            i++;
        } else if (c >= '0' && c <= '9') {
            size_t j = i;
            while (j < n && s[j] >= '0' && s[j] <= '9') j++;
            if (c == '0' && j - i > 1) return "a number with a leading zero";
            i = j;
        } else if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '{' || c == '}' || c == '[' ||
                   c == ']' || c == ':' || c == ',') {
            i++;
        } else {
            return "something other than strings, objects, arrays and non-negative integers in plain digits "
                   "(true, false, null, signs, fractions and exponents are not part of a model header)";
        }
    }
    return NULL;
}

static int compare_keys(const void *a, const void *b)
{
    return strcmp((*(const cJSON *const *)a)->string, (*(const cJSON *const *)b)->string);
}

/* A key that an object holds twice (JSON parsers disagree on which one wins,
 * and cJSON keeps both), searched by sorting; NULL if none.  *nomem is set
 * where the sort's memory cannot be had. */
static const char *repeated_key(const cJSON *obj, int *nomem)
{
    int n = cJSON_GetArraySize(obj);
    if (n < 2) return NULL;
    const cJSON **keys = malloc((size_t)n * sizeof *keys);
    if (!keys) { *nomem = 1; return NULL; }
    int k = 0;
    for (const cJSON *c = obj->child; c; c = c->next) keys[k++] = c;
    qsort(keys, (size_t)n, sizeof *keys, compare_keys);
    const char *dup = NULL;
    for (int i = 1; i < n && !dup; i++)
        if (strcmp(keys[i - 1]->string, keys[i]->string) == 0) dup = keys[i]->string;
    free(keys);
    return dup;
}

/* ------------------------------------------------------- the entries */

static sf_status read_metadata(const cJSON *meta, sf_safetensors *st, sf_error *err)
{
    if (!cJSON_IsObject(meta))
        return sfE_set(err, SF_ERR_FORMAT, "model file header: __metadata__ is not an object");
    for (const cJSON *v = meta->child; v; v = v->next)
        if (!cJSON_IsString(v))
            return sfE_set(err, SF_ERR_FORMAT, "model file header: metadata '%.100s' is not a string", v->string);
    const char *keys[3] = {"format", "format_version", "config"};
    char **dst[3] = {&st->metadata_format, &st->metadata_version, &st->metadata_config};
    for (int i = 0; i < 3; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(meta, keys[i]);
        if (!v) continue;
        *dst[i] = sfU_strdup(v->valuestring);
        if (!*dst[i]) return sfE_set(err, SF_ERR_NOMEM, "out of memory reading metadata");
    }
    return SF_OK;
}

/* An integer entry of a shape or data_offsets array: the text check leaves
 * only plain digits, so this is a non-negative integer, exact where it is at
 * most `max` (<= 2^53). */
static int read_count(const cJSON *v, double max, long long *out)
{
    if (!cJSON_IsNumber(v) || !(v->valuedouble <= max)) return 0;
    *out = (long long)v->valuedouble;
    return 1;
}

static sf_status read_tensor(const cJSON *item, const unsigned char *buffer, size_t buffer_size,
                             sf_tensor *t, sf_error *err)
{
    const char *name = item->string;
    if (!cJSON_IsObject(item))
        return sfE_set(err, SF_ERR_FORMAT, "model file header: the entry of tensor '%.100s' is not an object", name);
    for (const cJSON *c = item->child; c; c = c->next)
        if (strcmp(c->string, "dtype") != 0 && strcmp(c->string, "shape") != 0 && strcmp(c->string, "data_offsets") != 0)
            return sfE_set(err, SF_ERR_FORMAT,
                           "model file header: tensor '%.100s' has the key '%.60s' (an entry holds exactly dtype, "
                           "shape and data_offsets)", name, c->string);
    const cJSON *dtype = cJSON_GetObjectItemCaseSensitive(item, "dtype");
    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(item, "shape");
    const cJSON *offsets = cJSON_GetObjectItemCaseSensitive(item, "data_offsets");
    if (!cJSON_IsString(dtype) || !cJSON_IsArray(shape) || !cJSON_IsArray(offsets) ||
        cJSON_GetArraySize(offsets) != 2)
        return sfE_set(err, SF_ERR_FORMAT,
                       "model file header: tensor '%.100s' needs dtype, shape and data_offsets", name);
    size_t elsize;
    if (strcmp(dtype->valuestring, "F64") == 0) { t->dtype = SF_DTYPE_F64; elsize = 8; }
    else if (strcmp(dtype->valuestring, "F32") == 0) { t->dtype = SF_DTYPE_F32; elsize = 4; }
    else
        return sfE_set(err, SF_ERR_FORMAT, "model file: tensor '%.100s' has dtype %.40s; only F64 and F32 are read",
                       name, dtype->valuestring);
    t->ndim = cJSON_GetArraySize(shape);
    if (t->ndim > 4)
        return sfE_set(err, SF_ERR_FORMAT, "model file: tensor '%.100s' has %d dimensions (at most 4)", name, t->ndim);
    double count = 1.0;
    for (int d = 0; d < t->ndim; d++) {
        if (!read_count(cJSON_GetArrayItem(shape, d), 1e12, &t->shape[d]))
            return sfE_set(err, SF_ERR_FORMAT, "model file: tensor '%.100s' has an invalid shape", name);
        count *= (double)t->shape[d];
    }
    long long b, e;
    if (!read_count(cJSON_GetArrayItem(offsets, 0), (double)buffer_size, &b) ||
        !read_count(cJSON_GetArrayItem(offsets, 1), (double)buffer_size, &e) || e < b)
        return sfE_set(err, SF_ERR_FORMAT,
                       "model file: tensor '%.100s' has data offsets outside the data buffer of %zu bytes (truncated?)",
                       name, buffer_size);
    size_t begin = (size_t)b, end = (size_t)e;
    if ((double)(end - begin) != count * (double)elsize)
        return sfE_set(err, SF_ERR_FORMAT,
                       "model file: tensor '%.100s' has %zu data bytes but its shape needs %.0f", name,
                       end - begin, count * (double)elsize);
    t->data = buffer + begin;
    t->nbytes = end - begin;
    t->name = sfU_strdup(name);
    if (!t->name) return sfE_set(err, SF_ERR_NOMEM, "out of memory");
    return SF_OK;
}

static int compare_ranges(const void *a, const void *b)
{
    const sf_tensor *x = *(const sf_tensor *const *)a, *y = *(const sf_tensor *const *)b;
    if (x->data != y->data) return x->data < y->data ? -1 : 1;
    return x->nbytes < y->nbytes ? -1 : x->nbytes > y->nbytes;
}

/* The tensors' byte ranges tile the data buffer: sorted by (begin, end), each
 * begins where the one before ends, the first at 0 and the last at the end
 * of the file.  No overlap, no gap, no trailing bytes: every byte of the file
 * belongs to exactly one thing, so two readers cannot see different models. */
static sf_status check_tiling(const sf_safetensors *st, const unsigned char *buffer, size_t buffer_size,
                              sf_error *err)
{
    const sf_tensor **order = malloc((size_t)(st->n_tensors > 0 ? st->n_tensors : 1) * sizeof *order);
    if (!order) return sfE_set(err, SF_ERR_NOMEM, "out of memory");
    for (int i = 0; i < st->n_tensors; i++) order[i] = &st->tensors[i];
    qsort(order, (size_t)st->n_tensors, sizeof *order, compare_ranges);
    sf_status rc = SF_OK;
    /* Overlaps first (the worse fault, and the one to name), then gaps. */
    for (int pass = 0; pass < 2; pass++) {
        size_t at = 0;
        for (int i = 0; i < st->n_tensors && rc == SF_OK; i++) {
            size_t begin = (size_t)(order[i]->data - buffer);
            if (pass == 0 && begin < at)
                rc = sfE_set(err, SF_ERR_FORMAT,
                             "model file: tensors '%.100s' and '%.100s' overlap in the data buffer",
                             order[i - 1]->name, order[i]->name);
            else if (pass == 1 && begin > at)
                rc = sfE_set(err, SF_ERR_FORMAT,
                             "model file: a gap of %zu bytes in the data buffer before tensor '%.100s' (the tensors "
                             "must tile the buffer)", begin - at, order[i]->name);
            at = begin + order[i]->nbytes;
        }
    }
    size_t at = st->n_tensors ? (size_t)(order[st->n_tensors - 1]->data - buffer) + order[st->n_tensors - 1]->nbytes : 0;
    if (rc == SF_OK && at != buffer_size)
        rc = sfE_set(err, SF_ERR_FORMAT,
                     "model file: %zu bytes after the last tensor's data (the tensors must tile the data buffer)",
                     buffer_size - at);
    free(order);
    return rc;
}

/* -------------------------------------------------------------- parse */

sf_status sfS_parse(const unsigned char *data, size_t size, sf_safetensors *out, sf_error *err)
{
    memset(out, 0, sizeof *out);
    if (size > SF_MAX_FILE_SIZE)
        return sfE_set(err, SF_ERR_FORMAT, "model file is %zu bytes, more than the limit of %llu bytes (1 GiB)", size,
                       (unsigned long long)SF_MAX_FILE_SIZE);
    if (size < 8)
        return sfE_set(err, SF_ERR_FORMAT, "model file is %zu bytes: too short for a safetensors header", size);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = (n << 8) | data[i];
    if (n > SF_MAX_HEADER_SIZE)
        return sfE_set(err, SF_ERR_FORMAT, "model file: header length %llu exceeds the limit of %d bytes (100 MB): not safetensors",
                       (unsigned long long)n, SF_MAX_HEADER_SIZE);
    if (n > size - 8)
        return sfE_set(err, SF_ERR_FORMAT,
                       "model file: header length %llu exceeds the file (%zu bytes): truncated or not safetensors",
                       (unsigned long long)n, size);
    const char *text = (const char *)data + 8;
    if (!valid_utf8(data + 8, (size_t)n))
        return sfE_set(err, SF_ERR_FORMAT, "model file: header is not valid UTF-8");
    if (n == 0 || text[0] != '{')
        return sfE_set(err, SF_ERR_FORMAT, "model file: header is not a JSON object (its first byte must be '{')");
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(text, (size_t)n, &end, 0);
    /* The object's text, [text, end), is checked where cJSON is lenient; after it only the
     * padding safetensors allows: spaces (0x20). */
    const char *problem = header_text_problem(text, root ? (size_t)(end - text) : (size_t)n);
    if (!root || !cJSON_IsObject(root) || problem) {
        cJSON_Delete(root);
        return sfE_set(err, SF_ERR_FORMAT, "model file: header %s%s", problem ? "holds " : "is not a JSON object",
                       problem ? problem : "");
    }
    for (const char *p = end; p < text + n; p++)
        if (*p != ' ') {
            cJSON_Delete(root);
            return sfE_set(err, SF_ERR_FORMAT,
                           "model file: header holds text after its JSON object (byte %zu; only spaces may pad it)",
                           (size_t)(p - text) + 8);
        }
    sf_status rc = SF_OK;
    int nomem = 0;
    const char *dup = repeated_key(root, &nomem);
    for (const cJSON *item = root->child; item && !dup && !nomem; item = item->next)
        if (cJSON_IsObject(item)) dup = repeated_key(item, &nomem);
    if (nomem) rc = sfE_set(err, SF_ERR_NOMEM, "out of memory");
    else if (dup) rc = sfE_set(err, SF_ERR_FORMAT, "model file: header holds the key '%.100s' twice in one object", dup);
    const unsigned char *buffer = data + 8 + n;
    size_t buffer_size = size - 8 - (size_t)n;
    int count = cJSON_GetArraySize(root);
    if (rc == SF_OK) {
        out->tensors = calloc(count > 0 ? (size_t)count : 1, sizeof *out->tensors);
        if (!out->tensors) rc = sfE_set(err, SF_ERR_NOMEM, "out of memory");
    }
    for (const cJSON *item = root->child; rc == SF_OK && item; item = item->next) {
        if (strcmp(item->string, "__metadata__") == 0)
            rc = read_metadata(item, out, err);
        else if ((rc = read_tensor(item, buffer, buffer_size, &out->tensors[out->n_tensors], err)) == SF_OK)
            out->n_tensors++;
    }
    cJSON_Delete(root);
    if (rc == SF_OK) rc = check_tiling(out, buffer, buffer_size, err);
    if (rc != SF_OK) sfS_free(out);
    return rc;
}
