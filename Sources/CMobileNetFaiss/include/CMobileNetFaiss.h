// A C interface over the FAISS C++ library (Debian libfaiss-dev 1.7.3, static libfaiss.a, which
// does not contain FAISS's own C API). Every function catches all C++ exceptions: a FAISS error
// never crosses into Swift; it becomes a return code and a message in `error` (NUL-terminated,
// truncated to `error_size`).
#ifndef CMOBILENET_FAISS_H
#define CMOBILENET_FAISS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/// An owned faiss::Index.
typedef struct mnf_index mnf_index;

/// Return codes.
enum {
    MNF_OK = 0,
    /// FAISS threw (bad factory string, wrong dimension, unreadable file...); see `error`.
    MNF_FAILED = 1,
    /// The file was read, but its structure is inconsistent or of an unsupported kind.
    MNF_INVALID = 2,
    /// The isolated reader process died (crash, memory limit): a damaged file.
    MNF_CRASHED = 3,
    /// The isolated reader process took longer than the timeout.
    MNF_TIMEOUT = 4,
    /// fork, pipe or another system call failed.
    MNF_SYSTEM = 5,
};

/// Index kinds (`mnf_kind`).
enum { MNF_KIND_OTHER = 0, MNF_KIND_FLAT = 1, MNF_KIND_IVF_FLAT = 2, MNF_KIND_HNSW_FLAT = 3 };

/// faiss::index_factory(d, description, inner_product ? METRIC_INNER_PRODUCT : METRIC_L2).
int mnf_index_factory(int d, const char *description, int inner_product, mnf_index **out, char *error, size_t error_size);
/// Frees an index (NULL is allowed).
void mnf_free(mnf_index *index);

/// Index::train on `n` row-major vectors of the index's dimension.
int mnf_train(mnf_index *index, int64_t n, const float *x, char *error, size_t error_size);
/// Index::add: the new vectors get the ids ntotal, ntotal+1, ...
int mnf_add(mnf_index *index, int64_t n, const float *x, char *error, size_t error_size);
/// Index::add_with_ids (IVF indexes; Flat and HNSW throw, reported as MNF_FAILED).
int mnf_add_with_ids(mnf_index *index, int64_t n, const float *x, const int64_t *ids, char *error, size_t error_size);

/// Index::search of `n` queries for `k` neighbours each: `distances` and `labels` are [n, k].
/// `nprobe` (> 0) is used by IVF indexes and `ef_search` (> 0) by HNSW indexes, per call
/// (SearchParametersIVF / SearchParametersHNSW: safe with concurrent searches); 0 keeps the
/// value stored in the index. Missing results have label -1.
int mnf_search(const mnf_index *index, int64_t n, const float *x, int64_t k, int64_t nprobe, int64_t ef_search,
               float *distances, int64_t *labels, char *error, size_t error_size);

int64_t mnf_ntotal(const mnf_index *index);
/// The stored vectors of ids start..<start+count, row-major into out ([count, d]): Flat,
/// IVF<n>,Flat (scans the lists) and HNSW<M>,Flat (its flat storage).
int mnf_reconstruct_range(const mnf_index *index, int64_t start, int64_t count, float *out, char *error, size_t error_size);
int mnf_dimension(const mnf_index *index);
/// 0 = METRIC_INNER_PRODUCT, 1 = METRIC_L2, others as faiss::MetricType.
int mnf_metric(const mnf_index *index);
int mnf_is_trained(const mnf_index *index);
int mnf_kind(const mnf_index *index);
/// IVF: number of lists, else 0.
int64_t mnf_nlist(const mnf_index *index);
/// HNSW: the links per vector on levels above 0 (FAISS M; level 0 has 2M); 0 for other kinds.
int64_t mnf_hnsw_neighbours(const mnf_index *index);
/// IVF: nprobe stored in the index, HNSW: efSearch stored, else 0.
int64_t mnf_search_parameter(const mnf_index *index);
/// Sets the stored default (IVF nprobe, HNSW efSearch); ignored for other kinds.
void mnf_set_search_parameter(mnf_index *index, int64_t value);

/// faiss::write_index into memory: `*bytes` (free with `free`) and `*size`.
int mnf_serialize(const mnf_index *index, uint8_t **bytes, size_t *size, char *error, size_t error_size);

/// faiss::read_index of an open file (read from its start; `fd` stays open and owned by the
/// caller, so the file checked is the file read, whatever happens to its path meanwhile), then a
/// structural check of the result (sizes, ids and graph links in range; Flat, IVF*,Flat and
/// HNSW*,Flat only). Runs in this process: use `mnf_check_fd_isolated` first on untrusted files.
int mnf_read_fd(int fd, mnf_index **out, char *error, size_t error_size);

/// Runs `mnf_read_fd` in a forked child process whose address space is limited to the parent's
/// plus `extra_address_space` bytes, killed after `timeout_ms`; returns its code (MNF_CRASHED or
/// MNF_TIMEOUT when it did not finish).
int mnf_check_fd_isolated(int fd, uint64_t extra_address_space, int timeout_ms, char *error, size_t error_size);

#ifdef __cplusplus
}
#endif

#endif
