// HDF5 read-only helpers for Keras weight files. HDF5's error stack printing is disabled; every
// function reports failure through its return value.
#include "CMobileNetShims.h"
#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// Called before every open: HDF5's automatic error printing can be a per-thread setting, and
// callers may open files from any thread.
static void mn_h5_init(void) {
    H5open();
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
}

int mn_h5_open_file(const char *path, int64_t *out) {
    mn_h5_init();
    hid_t file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (file < 0) return -1;
    *out = (int64_t)file;
    return 0;
}

int mn_h5_open_image(const void *bytes, size_t length, int64_t *out) {
    mn_h5_init();
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    if (fapl < 0) return -1;
    if (H5Pset_fapl_core(fapl, 1 << 20, 0) < 0 || H5Pset_file_image(fapl, (void *)bytes, length) < 0) {
        H5Pclose(fapl);
        return -1;
    }
    // Each image gets its own name: HDF5 treats a second open of an already open name as the
    // same file, so two archives read at once would otherwise share the first one's bytes.
    // (Callers serialise calls through one lock, so the counter needs no atomics.)
    static unsigned long long image_counter = 0;
    char name[64];
    snprintf(name, sizeof name, "in-memory-%llu.h5", ++image_counter);
    hid_t file = H5Fopen(name, H5F_ACC_RDONLY, fapl);
    H5Pclose(fapl);
    if (file < 0) return -1;
    *out = (int64_t)file;
    return 0;
}

void mn_h5_close(int64_t id) {
    switch (H5Iget_type((hid_t)id)) {
    case H5I_FILE: H5Fclose((hid_t)id); break;
    case H5I_GROUP: H5Gclose((hid_t)id); break;
    case H5I_DATASET: H5Dclose((hid_t)id); break;
    case H5I_ATTR: H5Aclose((hid_t)id); break;
    default: H5Oclose((hid_t)id); break;
    }
}

int mn_h5_link_is_external(int64_t loc, const char *name) {
    if (H5Lexists((hid_t)loc, name, H5P_DEFAULT) <= 0) return -1;
    H5L_info_t info;
    if (H5Lget_info((hid_t)loc, name, &info, H5P_DEFAULT) < 0) return -1;
    return info.type == H5L_TYPE_EXTERNAL ? 1 : 0;
}

int mn_h5_dataset_info(int64_t loc, const char *name, uint64_t *dims, int max_rank, mn_h5_dataset_info_t *info) {
    memset(info, 0, sizeof *info);
    int link = mn_h5_link_is_external(loc, name);
    if (link < 0) return -1;
    if (link == 1) return -3;
    hid_t dataset = H5Dopen2((hid_t)loc, name, H5P_DEFAULT);
    if (dataset < 0) return -1;
    int status = -1;
    hid_t space = H5Dget_space(dataset);
    hid_t type = H5Dget_type(dataset);
    hid_t dcpl = H5Dget_create_plist(dataset);
    if (space < 0 || type < 0 || dcpl < 0) goto done;
    int rank = H5Sget_simple_extent_ndims(space);
    if (rank < 0 || rank > max_rank || rank > 32) goto done;
    hsize_t d[32];
    if (H5Sget_simple_extent_dims(space, d, NULL) < 0) goto done;
    for (int i = 0; i < rank; i++) dims[i] = (uint64_t)d[i];
    info->rank = rank;
    H5T_class_t cls = H5Tget_class(type);
    info->is_numeric = (cls == H5T_FLOAT || cls == H5T_INTEGER);
    info->element_size = (uint64_t)H5Tget_size(type);
    info->external_files = H5Pget_external_count(dcpl);
    info->is_virtual = H5Pget_layout(dcpl) == H5D_VIRTUAL;
    info->filters = H5Pget_nfilters(dcpl);
    info->storage_bytes = (uint64_t)H5Dget_storage_size(dataset);
    status = 0;
done:
    if (dcpl >= 0) H5Pclose(dcpl);
    if (type >= 0) H5Tclose(type);
    if (space >= 0) H5Sclose(space);
    H5Dclose(dataset);
    return status;
}

int mn_h5_group_open(int64_t loc, const char *name, int64_t *out) {
    // External links lead into other files: never followed.
    if (mn_h5_link_is_external(loc, name) != 0) return -1;
    hid_t group = H5Gopen2((hid_t)loc, name, H5P_DEFAULT);
    if (group < 0) return -1;
    *out = (int64_t)group;
    return 0;
}

int64_t mn_h5_child_count(int64_t group) {
    H5G_info_t info;
    if (H5Gget_info((hid_t)group, &info) < 0) return -1;
    return (int64_t)info.nlinks;
}

int64_t mn_h5_child_name(int64_t group, uint64_t index, char *buf, size_t buflen) {
    ssize_t n = H5Lget_name_by_idx((hid_t)group, ".", H5_INDEX_NAME, H5_ITER_INC, (hsize_t)index, buf, buflen, H5P_DEFAULT);
    return (int64_t)n;
}

int mn_h5_child_kind(int64_t group, const char *name) {
    if (H5Lexists((hid_t)group, name, H5P_DEFAULT) <= 0) return -1;
    if (mn_h5_link_is_external(group, name) != 0) return -3;
    hid_t object = H5Oopen((hid_t)group, name, H5P_DEFAULT);
    if (object < 0) return -1;
    H5I_type_t type = H5Iget_type(object);
    H5Oclose(object);
    if (type == H5I_GROUP) return 1;
    if (type == H5I_DATASET) return 2;
    return 0;
}

int mn_h5_attr_exists(int64_t object, const char *name) {
    htri_t r = H5Aexists((hid_t)object, name);
    return r < 0 ? -1 : (int)r;
}

int mn_h5_attr_read_strings(int64_t object, const char *name, char **out, size_t *total_bytes, size_t *count) {
    *out = NULL; *total_bytes = 0; *count = 0;
    hid_t attr = H5Aopen((hid_t)object, name, H5P_DEFAULT);
    if (attr < 0) return -1;
    int status = -1;
    hid_t type = H5Aget_type(attr);
    hid_t space = H5Aget_space(attr);
    if (type < 0 || space < 0) goto done;
    hssize_t n = H5Sget_simple_extent_npoints(space);
    if (n < 0) goto done;
    if (H5Tget_class(type) != H5T_STRING) {
        status = (n == 0) ? 0 : -2;
        goto done;
    }
    if (H5Tis_variable_str(type) > 0) {
        char **strings = calloc((size_t)(n > 0 ? n : 1), sizeof(char *));
        hid_t mem = H5Tcopy(H5T_C_S1);
        H5Tset_size(mem, H5T_VARIABLE);
        H5Tset_cset(mem, H5Tget_cset(type));
        if (strings && H5Aread(attr, mem, strings) >= 0) {
            size_t total = 0;
            for (hssize_t i = 0; i < n; i++) total += (strings[i] ? strlen(strings[i]) : 0) + 1;
            char *buffer = malloc(total > 0 ? total : 1);
            if (buffer) {
                size_t offset = 0;
                for (hssize_t i = 0; i < n; i++) {
                    size_t len = strings[i] ? strlen(strings[i]) : 0;
                    if (len) memcpy(buffer + offset, strings[i], len);
                    buffer[offset + len] = 0;
                    offset += len + 1;
                }
                *out = buffer; *total_bytes = total; *count = (size_t)n;
                status = 0;
            }
            H5Dvlen_reclaim(mem, space, H5P_DEFAULT, strings);
        }
        H5Tclose(mem);
        free(strings);
    } else {
        size_t size = H5Tget_size(type);
        char *raw = calloc((size_t)(n > 0 ? n : 1), size + 1);
        hid_t mem = H5Tcopy(H5T_C_S1);
        H5Tset_size(mem, size);
        H5Tset_strpad(mem, H5T_STR_NULLPAD);
        if (raw && H5Aread(attr, mem, raw) >= 0) {
            char *buffer = malloc((size_t)(n > 0 ? n : 1) * (size + 1));
            if (buffer) {
                size_t offset = 0;
                for (hssize_t i = 0; i < n; i++) {
                    const char *s = raw + (size_t)i * size;
                    size_t len = strnlen(s, size);
                    memcpy(buffer + offset, s, len);
                    buffer[offset + len] = 0;
                    offset += len + 1;
                }
                *out = buffer; *total_bytes = offset; *count = (size_t)n;
                status = 0;
            }
        }
        H5Tclose(mem);
        free(raw);
    }
done:
    if (space >= 0) H5Sclose(space);
    if (type >= 0) H5Tclose(type);
    H5Aclose(attr);
    return status;
}

int mn_h5_dataset_shape(int64_t loc, const char *name, uint64_t *dims, int max_rank) {
    hid_t dataset = H5Dopen2((hid_t)loc, name, H5P_DEFAULT);
    if (dataset < 0) return -1;
    hid_t space = H5Dget_space(dataset);
    int rank = space >= 0 ? H5Sget_simple_extent_ndims(space) : -1;
    if (rank > max_rank) rank = -2;
    if (rank >= 0) {
        hsize_t d[32];
        H5Sget_simple_extent_dims(space, d, NULL);
        for (int i = 0; i < rank; i++) dims[i] = (uint64_t)d[i];
    }
    if (space >= 0) H5Sclose(space);
    H5Dclose(dataset);
    return rank;
}

int mn_h5_dataset_is_numeric(int64_t loc, const char *name) {
    hid_t dataset = H5Dopen2((hid_t)loc, name, H5P_DEFAULT);
    if (dataset < 0) return -1;
    hid_t type = H5Dget_type(dataset);
    H5T_class_t cls = type >= 0 ? H5Tget_class(type) : H5T_NO_CLASS;
    if (type >= 0) H5Tclose(type);
    H5Dclose(dataset);
    return (cls == H5T_FLOAT || cls == H5T_INTEGER) ? 1 : 0;
}

int mn_h5_dataset_read_float(int64_t loc, const char *name, float *out, size_t count) {
    hid_t dataset = H5Dopen2((hid_t)loc, name, H5P_DEFAULT);
    if (dataset < 0) return -1;
    int status = -1;
    hid_t space = H5Dget_space(dataset);
    if (space >= 0) {
        hssize_t n = H5Sget_simple_extent_npoints(space);
        if (n >= 0 && (size_t)n == count) {
            if (count == 0 || H5Dread(dataset, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, out) >= 0) status = 0;
        } else {
            status = -2;
        }
        H5Sclose(space);
    }
    H5Dclose(dataset);
    return status;
}

void mn_free(void *pointer) { free(pointer); }

// MARK: Writing (Keras 3 model.weights.h5 for `.keras` export). Files are created with HDF5's
// default (earliest) format, as h5py does; datasets are contiguous little-endian float32.

int mn_h5_create_file(const char *path, int64_t *out) {
    mn_h5_init();
    hid_t file = H5Fcreate(path, H5F_ACC_EXCL, H5P_DEFAULT, H5P_DEFAULT);
    if (file < 0) return -1;
    *out = (int64_t)file;
    return 0;
}

int mn_h5_group_create(int64_t loc, const char *name, int64_t *out) {
    hid_t group = H5Gcreate2((hid_t)loc, name, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (group < 0) return -1;
    *out = (int64_t)group;
    return 0;
}

int mn_h5_attr_write_string(int64_t object, const char *name, const char *value) {
    int status = -1;
    hid_t type = H5Tcopy(H5T_C_S1);
    hid_t space = H5Screate(H5S_SCALAR);
    hid_t attr = -1;
    if (type < 0 || space < 0) goto done;
    if (H5Tset_size(type, H5T_VARIABLE) < 0 || H5Tset_cset(type, H5T_CSET_UTF8) < 0) goto done;
    attr = H5Acreate2((hid_t)object, name, type, space, H5P_DEFAULT, H5P_DEFAULT);
    if (attr < 0) goto done;
    if (H5Awrite(attr, type, &value) >= 0) status = 0;
done:
    if (attr >= 0) H5Aclose(attr);
    if (space >= 0) H5Sclose(space);
    if (type >= 0) H5Tclose(type);
    return status;
}

int mn_h5_dataset_write_float(int64_t loc, const char *name, const uint64_t *dims, int rank, const float *values) {
    if (rank < 0 || rank > 8) return -1;
    hsize_t d[8];
    for (int i = 0; i < rank; i++) d[i] = (hsize_t)dims[i];
    hid_t space = rank == 0 ? H5Screate(H5S_SCALAR) : H5Screate_simple(rank, d, NULL);
    if (space < 0) return -1;
    int status = -1;
    hid_t dataset = H5Dcreate2((hid_t)loc, name, H5T_IEEE_F32LE, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (dataset >= 0) {
        if (H5Dwrite(dataset, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, values) >= 0) status = 0;
        H5Dclose(dataset);
    }
    H5Sclose(space);
    return status;
}

int mn_h5_close_file(int64_t file) {
    int status = H5Fflush((hid_t)file, H5F_SCOPE_GLOBAL) < 0 ? -1 : 0;
    if (H5Fclose((hid_t)file) < 0) status = -1;
    return status;
}
