/* sf_safetensors.c -- the safetensors container: header, tensor table. */
#include "sf_internal.h"

#include <cJSON.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define SF_MAX_HEADER (100u * 1024u * 1024u)

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

static sf_status read_metadata(const cJSON *meta, sf_safetensors *st, sf_error *err)
{
    if (!cJSON_IsObject(meta))
        return sfE_set(err, SF_ERR_FORMAT, "model file header: __metadata__ is not an object");
    const char *keys[3] = {"format", "format_version", "config"};
    char **dst[3] = {&st->metadata_format, &st->metadata_version, &st->metadata_config};
    for (int i = 0; i < 3; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(meta, keys[i]);
        if (!v) continue;
        if (!cJSON_IsString(v))
            return sfE_set(err, SF_ERR_FORMAT, "model file header: metadata '%s' is not a string", keys[i]);
        *dst[i] = sfU_strdup(v->valuestring);
        if (!*dst[i]) return sfE_set(err, SF_ERR_NOMEM, "out of memory reading metadata");
    }
    return SF_OK;
}

static sf_status read_tensor(const cJSON *item, const unsigned char *buffer, size_t buffer_size,
                             sf_tensor *t, sf_error *err)
{
    const char *name = item->string;
    const cJSON *dtype = cJSON_GetObjectItemCaseSensitive(item, "dtype");
    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(item, "shape");
    const cJSON *offsets = cJSON_GetObjectItemCaseSensitive(item, "data_offsets");
    if (!cJSON_IsObject(item) || !cJSON_IsString(dtype) || !cJSON_IsArray(shape) ||
        !cJSON_IsArray(offsets) || cJSON_GetArraySize(offsets) != 2)
        return sfE_set(err, SF_ERR_FORMAT,
                       "model file header: tensor '%s' needs dtype, shape and data_offsets", name);
    size_t elsize;
    if (strcmp(dtype->valuestring, "F64") == 0) { t->dtype = SF_DTYPE_F64; elsize = 8; }
    else if (strcmp(dtype->valuestring, "F32") == 0) { t->dtype = SF_DTYPE_F32; elsize = 4; }
    else
        return sfE_set(err, SF_ERR_FORMAT, "model file: tensor '%s' has dtype %s; only F64 and F32 are read",
                       name, dtype->valuestring);
    t->ndim = cJSON_GetArraySize(shape);
    if (t->ndim > 4)
        return sfE_set(err, SF_ERR_FORMAT, "model file: tensor '%s' has %d dimensions (at most 4)", name, t->ndim);
    double count = 1.0;
    for (int d = 0; d < t->ndim; d++) {
        const cJSON *s = cJSON_GetArrayItem(shape, d);
        if (!cJSON_IsNumber(s) || s->valuedouble < 0 || s->valuedouble > 1e12 ||
            s->valuedouble != (double)(long long)s->valuedouble)
            return sfE_set(err, SF_ERR_FORMAT, "model file: tensor '%s' has an invalid shape", name);
        t->shape[d] = (long long)s->valuedouble;
        count *= s->valuedouble;
    }
    const cJSON *b = cJSON_GetArrayItem(offsets, 0), *e = cJSON_GetArrayItem(offsets, 1);
    if (!cJSON_IsNumber(b) || !cJSON_IsNumber(e) || b->valuedouble < 0 ||
        e->valuedouble < b->valuedouble || e->valuedouble > (double)buffer_size)
        return sfE_set(err, SF_ERR_FORMAT,
                       "model file: tensor '%s' has data offsets outside the file (truncated?)", name);
    size_t begin = (size_t)b->valuedouble, end = (size_t)e->valuedouble;
    if ((double)(end - begin) != count * (double)elsize)
        return sfE_set(err, SF_ERR_FORMAT,
                       "model file: tensor '%s' has %zu data bytes but its shape needs %.0f", name,
                       end - begin, count * (double)elsize);
    t->data = buffer + begin;
    t->nbytes = end - begin;
    t->name = sfU_strdup(name);
    if (!t->name) return sfE_set(err, SF_ERR_NOMEM, "out of memory");
    return SF_OK;
}

static sf_status check_overlaps(const sf_safetensors *st, sf_error *err)
{
    for (int i = 0; i < st->n_tensors; i++)
        for (int j = i + 1; j < st->n_tensors; j++) {
            const sf_tensor *a = &st->tensors[i], *b = &st->tensors[j];
            if (a->nbytes && b->nbytes && a->data < b->data + b->nbytes && b->data < a->data + a->nbytes)
                return sfE_set(err, SF_ERR_FORMAT, "model file: tensors '%s' and '%s' overlap", a->name, b->name);
        }
    return SF_OK;
}

/* Whether JSON text holds the escape \u0000 in a string: cJSON would end the C string there,
 * so text after it would be invisible to this reader and visible to others. */
static int has_nul_escape(const char *s, size_t n)
{
    for (size_t i = 0; i + 1 < n; i++) {
        if (s[i] != '\\') continue;
        if (s[i + 1] == 'u' && i + 5 < n && memcmp(s + i + 2, "0000", 4) == 0) return 1;
        i++; /* skip the escaped character (a backslash escapes exactly one) */
    }
    return 0;
}

sf_status sfS_parse(const unsigned char *data, size_t size, sf_safetensors *out, sf_error *err)
{
    memset(out, 0, sizeof *out);
    if (size < 8)
        return sfE_set(err, SF_ERR_FORMAT, "model file is %zu bytes: too short for a safetensors header", size);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = (n << 8) | data[i];
    if (n > SF_MAX_HEADER || n > size - 8)
        return sfE_set(err, SF_ERR_FORMAT,
                       "model file: header length %llu exceeds the file (%zu bytes): truncated or not safetensors",
                       (unsigned long long)n, size);
    if (has_nul_escape((const char *)data + 8, (size_t)n))
        return sfE_set(err, SF_ERR_FORMAT, "model file: header holds a NUL character (\\u0000) in a string");
    cJSON *root = cJSON_ParseWithLength((const char *)data + 8, (size_t)n);
    if (!root || !cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return sfE_set(err, SF_ERR_FORMAT, "model file: header is not a JSON object");
    }
    const unsigned char *buffer = data + 8 + n;
    size_t buffer_size = size - 8 - (size_t)n;
    int count = cJSON_GetArraySize(root);
    out->tensors = calloc(count > 0 ? (size_t)count : 1, sizeof *out->tensors);
    sf_status rc = out->tensors ? SF_OK : sfE_set(err, SF_ERR_NOMEM, "out of memory");
    for (const cJSON *item = root->child; rc == SF_OK && item; item = item->next) {
        if (strcmp(item->string, "__metadata__") == 0)
            rc = read_metadata(item, out, err);
        else if ((rc = read_tensor(item, buffer, buffer_size, &out->tensors[out->n_tensors], err)) == SF_OK)
            out->n_tensors++;
    }
    cJSON_Delete(root);
    if (rc == SF_OK) rc = check_overlaps(out, err);
    if (rc != SF_OK) sfS_free(out);
    return rc;
}
