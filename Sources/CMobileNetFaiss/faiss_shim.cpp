// The C interface of CMobileNetFaiss.h over the FAISS C++ API (faiss 1.7.3). See the header.
#include "CMobileNetFaiss.h"
#include "CMobileNetProcess.h"
#include <omp.h>

#include <stdexcept>
#include <faiss/Index.h>
#include <faiss/IndexFlat.h>
#include <faiss/IndexHNSW.h>
#include <faiss/IndexIVF.h>
#include <faiss/IndexIVFFlat.h>
#include <faiss/impl/FaissException.h>
#include <faiss/impl/io.h>
#include <faiss/index_factory.h>
#include <faiss/index_io.h>
#include <faiss/invlists/InvertedLists.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <new>
#include <string>
#include <typeinfo>

#include <csignal>
#include <poll.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

struct mnf_index {
    faiss::Index *index;
    /// HNSW only: FAISS 1.7.3 (and 1.7.4) size the search's candidate queue from the index's own
    /// `hnsw.efSearch` and ignore `SearchParametersHNSW::efSearch` there, so a search at another
    /// efSearch sets the member for its duration: exclusively, while searches at the stored
    /// value share the lock.
    mutable std::shared_mutex hnsw_ef;
};

namespace {

/// Holds the package's BLAS lock shared for a FAISS call that may run BLAS (see mn_blas_enter).
struct BLASSection {
    BLASSection() { mn_blas_enter(); }
    ~BLASSection() { mn_blas_leave(); }
    BLASSection(const BLASSection &) = delete;
    BLASSection &operator=(const BLASSection &) = delete;
};

void set_error(char *error, size_t error_size, const std::string &message) {
    if (!error || error_size == 0) return;
    size_t n = message.size() < error_size - 1 ? message.size() : error_size - 1;
    std::memcpy(error, message.data(), n);
    error[n] = 0;
}

/// FAISS messages start with "Error in <function> at <file>:<line>: "; keep what follows.
std::string faiss_message(const faiss::FaissException &e) {
    std::string m = e.msg.empty() ? std::string(e.what()) : e.msg;
    size_t at = m.find(".cpp:");
    if (m.rfind("Error in ", 0) == 0 && at != std::string::npos) {
        size_t colon = m.find(": ", at + 5);
        if (colon != std::string::npos) return m.substr(colon + 2);
    }
    return m;
}

/// Runs `body`, turning every C++ exception into MNF_FAILED and a message.
template <typename Body>
int guarded(char *error, size_t error_size, Body body) {
    try {
        return body();
    } catch (const faiss::FaissException &e) {
        set_error(error, error_size, faiss_message(e));
    } catch (const std::bad_alloc &) {
        set_error(error, error_size, "out of memory");
    } catch (const std::exception &e) {
        set_error(error, error_size, e.what());
    } catch (...) {
        set_error(error, error_size, "unknown C++ exception");
    }
    return MNF_FAILED;
}

int kind_of(const faiss::Index *index) {
    const std::type_info &t = typeid(*index);
    if (t == typeid(faiss::IndexFlat) || t == typeid(faiss::IndexFlatIP) || t == typeid(faiss::IndexFlatL2)) return MNF_KIND_FLAT;
    if (t == typeid(faiss::IndexIVFFlat)) return MNF_KIND_IVF_FLAT;
    if (t == typeid(faiss::IndexHNSWFlat)) return MNF_KIND_HNSW_FLAT;
    return MNF_KIND_OTHER;
}

/// Largest dimension accepted from a file.
const int64_t max_dimension = 1 << 16;

/// The structural check of an index read from a file: everything search relies on is in range.
/// Returns an empty string when the index is consistent, else the problem.
std::string check_structure(const faiss::Index *index) {
    const int64_t d = index->d, n = index->ntotal;
    if (d <= 0 || d > max_dimension) return "dimension " + std::to_string(d) + " is out of range";
    if (n < 0) return "negative vector count";
    switch (kind_of(index)) {
    case MNF_KIND_FLAT: {
        auto flat = static_cast<const faiss::IndexFlat *>(index);
        if (flat->code_size != size_t(d) * sizeof(float)) return "flat code size does not match the dimension";
        if (flat->codes.size() != size_t(n) * flat->code_size) return "flat storage holds " + std::to_string(flat->codes.size()) + " bytes, expected " + std::to_string(size_t(n) * flat->code_size);
        return "";
    }
    case MNF_KIND_IVF_FLAT: {
        auto ivf = static_cast<const faiss::IndexIVFFlat *>(index);
        if (!ivf->quantizer) return "IVF index without a coarse quantizer";
        if (kind_of(ivf->quantizer) != MNF_KIND_FLAT) return "IVF coarse quantizer is not a flat index";
        std::string q = check_structure(ivf->quantizer);
        if (!q.empty()) return "coarse quantizer: " + q;
        if (ivf->nlist == 0 || int64_t(ivf->nlist) != ivf->quantizer->ntotal) return "IVF list count does not match the quantizer's centroids";
        if (ivf->quantizer->d != d) return "quantizer dimension does not match the index";
        if (ivf->metric_type != ivf->quantizer->metric_type) return "quantizer metric does not match the index";
        if (ivf->code_size != size_t(d) * sizeof(float)) return "IVF code size does not match the dimension";
        auto lists = dynamic_cast<const faiss::ArrayInvertedLists *>(ivf->invlists);
        if (!lists || typeid(*ivf->invlists) != typeid(faiss::ArrayInvertedLists)) return "IVF inverted lists are not in-memory array lists";
        if (lists->nlist != ivf->nlist || lists->codes.size() != ivf->nlist || lists->ids.size() != ivf->nlist) return "IVF inverted list count is inconsistent";
        if (lists->code_size != ivf->code_size) return "IVF inverted list code size is inconsistent";
        int64_t total = 0;
        for (size_t l = 0; l < ivf->nlist; l++) {
            if (lists->codes[l].size() != lists->ids[l].size() * lists->code_size) return "IVF list " + std::to_string(l) + " has codes and ids of different lengths";
            for (faiss::Index::idx_t id : lists->ids[l]) {
                if (id < 0 || id >= n) return "IVF list " + std::to_string(l) + " holds id " + std::to_string(id) + " outside 0..<" + std::to_string(n);
            }
            total += int64_t(lists->ids[l].size());
        }
        if (total != n) return "IVF lists hold " + std::to_string(total) + " vectors, the header says " + std::to_string(n);
        // nprobe is a size_t in the file: a value that is negative as int64 (as Python's
        // faiss.downcast_index(...).nprobe = -1 would write) makes every default search fail
        // FAISS's nprobe > 0 assertion; zero does too.
        if (int64_t(ivf->nprobe) < 1) return "IVF nprobe " + std::to_string(int64_t(ivf->nprobe)) + " is out of range (at least 1)";
        return "";
    }
    case MNF_KIND_HNSW_FLAT: {
        auto hnsw_index = static_cast<const faiss::IndexHNSW *>(index);
        const faiss::HNSW &h = hnsw_index->hnsw;
        if (!hnsw_index->storage || kind_of(hnsw_index->storage) != MNF_KIND_FLAT) return "HNSW index without flat storage";
        std::string s = check_structure(hnsw_index->storage);
        if (!s.empty()) return "HNSW storage: " + s;
        if (hnsw_index->storage->ntotal != n || hnsw_index->storage->d != d) return "HNSW storage size does not match the header";
        if (h.cum_nneighbor_per_level.size() < 2 || h.cum_nneighbor_per_level[0] != 0) return "HNSW neighbour table is malformed";
        for (size_t i = 1; i < h.cum_nneighbor_per_level.size(); i++) {
            if (h.cum_nneighbor_per_level[i] < h.cum_nneighbor_per_level[i - 1] || h.cum_nneighbor_per_level[i] > (1 << 20)) return "HNSW neighbour counts are malformed";
        }
        const int64_t levels_available = int64_t(h.cum_nneighbor_per_level.size()) - 1;
        if (int64_t(h.levels.size()) != n || int64_t(h.offsets.size()) != n + 1) return "HNSW level or offset table does not match the vector count";
        if (h.offsets[0] != 0 || h.offsets[n] != h.neighbors.size()) return "HNSW offsets do not cover the neighbour table";
        int max_seen = -1;
        for (int64_t i = 0; i < n; i++) {
            const int level = h.levels[i];
            if (level < 1 || level > levels_available) return "HNSW vector " + std::to_string(i) + " has level " + std::to_string(level) + " out of range";
            if (h.offsets[i + 1] < h.offsets[i] || h.offsets[i + 1] - h.offsets[i] != size_t(h.cum_nneighbor_per_level[level])) return "HNSW offsets of vector " + std::to_string(i) + " are inconsistent";
            if (level - 1 > max_seen) max_seen = level - 1;
        }
        for (int64_t i = 0; i < n; i++) {
            for (int l = 0; l < h.levels[i]; l++) {
                size_t begin = h.offsets[i] + h.cum_nneighbor_per_level[l], end = h.offsets[i] + h.cum_nneighbor_per_level[l + 1];
                for (size_t j = begin; j < end; j++) {
                    const faiss::HNSW::storage_idx_t v = h.neighbors[j];
                    if (v == -1) continue;
                    if (v < 0 || v >= n) return "HNSW vector " + std::to_string(i) + " links to " + std::to_string(v) + " outside 0..<" + std::to_string(n);
                    if (h.levels[v] <= l) return "HNSW vector " + std::to_string(i) + " links at level " + std::to_string(l) + " to a vector not on that level";
                }
            }
        }
        if (n > 0) {
            if (h.entry_point < 0 || h.entry_point >= n) return "HNSW entry point is out of range";
            if (h.max_level != max_seen || h.levels[h.entry_point] != h.max_level + 1) return "HNSW maximum level is inconsistent with the entry point";
        }
        if (h.efSearch <= 0 || h.efSearch > (1 << 20) || h.efConstruction <= 0) return "HNSW efSearch or efConstruction is out of range";
        return "";
    }
    default:
        return std::string("unsupported index type ") + typeid(*index).name() + " (supported: Flat, IVF<n>,Flat and HNSW<M>,Flat)";
    }
}

/// An IOWriter into one malloc'd buffer grown with realloc (no second copy at the end).
struct MallocWriter : faiss::IOWriter {
    uint8_t *data = nullptr;
    size_t size = 0, capacity = 0;
    size_t operator()(const void *ptr, size_t item_size, size_t nitems) override {
        size_t bytes = item_size * nitems;
        if (size + bytes > capacity) {
            size_t wanted = capacity ? capacity : 1 << 16;
            while (wanted < size + bytes) wanted *= 2;
            auto grown = static_cast<uint8_t *>(std::realloc(data, wanted));
            if (!grown) throw std::bad_alloc();
            data = grown;
            capacity = wanted;
        }
        if (bytes) std::memcpy(data + size, ptr, bytes);
        size += bytes;
        return nitems;
    }
    ~MallocWriter() override { std::free(data); }
};

} // namespace

extern "C" {

int mnf_index_factory(int d, const char *description, int inner_product, mnf_index **out, char *error, size_t error_size) {
    *out = nullptr;
    return guarded(error, error_size, [&] {
        std::unique_ptr<faiss::Index> index(faiss::index_factory(d, description, inner_product ? faiss::METRIC_INNER_PRODUCT : faiss::METRIC_L2));
        // Structures FAISS 1.7.3 builds but cannot use: "IVF0,Flat" aborts on an assertion in
        // add, "HNSW0,Flat" crashes and "HNSW1,Flat" loops forever in add (its level
        // probabilities are empty); an IVF index over another quantizer ("IVF8_HNSW32,Flat") is
        // written but refused by the reader's structural check (flat quantizers only).
        if (auto ivf = dynamic_cast<const faiss::IndexIVF *>(index.get())) {
            if (ivf->nlist == 0) { set_error(error, error_size, "an IVF index needs at least 1 list"); return MNF_INVALID; }
            if (!ivf->quantizer || kind_of(ivf->quantizer) != MNF_KIND_FLAT) {
                set_error(error, error_size, "only a flat coarse quantizer is supported (IVF<n>,Flat)");
                return MNF_INVALID;
            }
        }
        if (auto hnsw = dynamic_cast<const faiss::IndexHNSW *>(index.get())) {
            const auto &cum = hnsw->hnsw.cum_nneighbor_per_level;
            if (cum.size() < 2 || cum[1] - cum[0] < 4) { set_error(error, error_size, "HNSW needs M of at least 2"); return MNF_INVALID; }
        }
        *out = new mnf_index{index.release(), {}};
        return MNF_OK;
    });
}

void mnf_free(mnf_index *index) {
    if (!index) return;
    delete index->index;
    delete index;
}

int mnf_train(mnf_index *index, int64_t n, const float *x, char *error, size_t error_size) {
    return guarded(error, error_size, [&] { BLASSection blas; index->index->train(n, x); return MNF_OK; });
}

int mnf_add(mnf_index *index, int64_t n, const float *x, char *error, size_t error_size) {
    return guarded(error, error_size, [&] { BLASSection blas; index->index->add(n, x); return MNF_OK; });
}

int mnf_add_with_ids(mnf_index *index, int64_t n, const float *x, const int64_t *ids, char *error, size_t error_size) {
    return guarded(error, error_size, [&] {
        BLASSection blas;
        index->index->add_with_ids(n, x, reinterpret_cast<const faiss::Index::idx_t *>(ids));
        return MNF_OK;
    });
}

int mnf_reconstruct_range(const mnf_index *index, int64_t start, int64_t count, float *out, char *error, size_t error_size) {
    return guarded(error, error_size, [&] {
        if (start < 0 || count < 0 || start + count > index->index->ntotal) throw std::invalid_argument("ids out of range");
        index->index->reconstruct_n(start, count, out);
        return MNF_OK;
    });
}

int mnf_search(const mnf_index *index, int64_t n, const float *x, int64_t k, int64_t nprobe, int64_t ef_search,
               float *distances, int64_t *labels, char *error, size_t error_size) {
    return guarded(error, error_size, [&] {
        // One query runs on the calling thread: FAISS would open an OpenMP team for it, and
        // waking the other threads costs more than the search (on a busy machine a sleeping
        // thread waits for a scheduler tick: single HNSW queries took 16-24 ms instead of 0.1 ms).
        struct CallingThreadOnly {
            bool active;
            int saved;
            explicit CallingThreadOnly(bool on) : active(on), saved(on ? omp_get_max_threads() : 0) { if (active) omp_set_num_threads(1); }
            ~CallingThreadOnly() { if (active) omp_set_num_threads(saved); }
        } calling_thread_only(n == 1);
        BLASSection blas;
        faiss::Index::idx_t *out = reinterpret_cast<faiss::Index::idx_t *>(labels);
        switch (kind_of(index->index)) {
        case MNF_KIND_IVF_FLAT: {
            faiss::SearchParametersIVF params;
            params.nprobe = nprobe > 0 ? size_t(nprobe) : static_cast<const faiss::IndexIVF *>(index->index)->nprobe;
            index->index->search(n, x, k, distances, out, &params);
            break;
        }
        case MNF_KIND_HNSW_FLAT: {
            // No SearchParametersHNSW (its efSearch is not honoured, see mnf_index): the search
            // runs exactly as Python's `index.hnsw.efSearch = ef; index.search(x, k)`.
            auto hnsw_index = static_cast<faiss::IndexHNSW *>(const_cast<faiss::Index *>(index->index));
            std::shared_lock<std::shared_mutex> shared(index->hnsw_ef);
            if (ef_search <= 0 || int(ef_search) == hnsw_index->hnsw.efSearch) {
                hnsw_index->search(n, x, k, distances, out);
            } else {
                shared.unlock();
                std::unique_lock<std::shared_mutex> exclusive(index->hnsw_ef);
                const int stored = hnsw_index->hnsw.efSearch;
                struct Restore {
                    faiss::HNSW &hnsw;
                    int value;
                    ~Restore() { hnsw.efSearch = value; }
                } restore{hnsw_index->hnsw, stored};
                hnsw_index->hnsw.efSearch = int(ef_search);
                hnsw_index->search(n, x, k, distances, out);
            }
            break;
        }
        default:
            index->index->search(n, x, k, distances, out);
        }
        return MNF_OK;
    });
}

int64_t mnf_ntotal(const mnf_index *index) { return index->index->ntotal; }
int mnf_dimension(const mnf_index *index) { return index->index->d; }
int mnf_metric(const mnf_index *index) { return int(index->index->metric_type); }
int mnf_is_trained(const mnf_index *index) { return index->index->is_trained ? 1 : 0; }
int mnf_kind(const mnf_index *index) { return kind_of(index->index); }

int64_t mnf_nlist(const mnf_index *index) {
    auto ivf = dynamic_cast<const faiss::IndexIVF *>(index->index);
    return ivf ? int64_t(ivf->nlist) : 0;
}

int64_t mnf_hnsw_neighbours(const mnf_index *index) {
    auto hnsw = dynamic_cast<const faiss::IndexHNSW *>(index->index);
    if (!hnsw || hnsw->hnsw.cum_nneighbor_per_level.size() < 2) return 0;
    return int64_t(hnsw->hnsw.cum_nneighbor_per_level[1] - hnsw->hnsw.cum_nneighbor_per_level[0]) / 2;
}

int64_t mnf_search_parameter(const mnf_index *index) {
    if (auto ivf = dynamic_cast<const faiss::IndexIVF *>(index->index)) return int64_t(ivf->nprobe);
    if (auto hnsw = dynamic_cast<const faiss::IndexHNSW *>(index->index)) {
        std::shared_lock<std::shared_mutex> shared(index->hnsw_ef);
        return hnsw->hnsw.efSearch;
    }
    return 0;
}

void mnf_set_search_parameter(mnf_index *index, int64_t value) {
    if (value <= 0) return;
    if (auto ivf = dynamic_cast<faiss::IndexIVF *>(index->index)) ivf->nprobe = size_t(value);
    else if (auto hnsw = dynamic_cast<faiss::IndexHNSW *>(index->index)) {
        std::unique_lock<std::shared_mutex> exclusive(index->hnsw_ef);
        hnsw->hnsw.efSearch = int(value);
    }
}

int mnf_serialize(const mnf_index *index, uint8_t **bytes, size_t *size, char *error, size_t error_size) {
    *bytes = nullptr;
    *size = 0;
    return guarded(error, error_size, [&] {
        MallocWriter writer;
        faiss::write_index(index->index, &writer);
        *bytes = writer.data;
        *size = writer.size;
        writer.data = nullptr;
        return MNF_OK;
    });
}

int mnf_read_fd(int fd, mnf_index **out, char *error, size_t error_size) {
    *out = nullptr;
    // A stream of its own over the same open file, from the start (the offset is shared with
    // every copy of the descriptor, a forked child's included).
    int copy = dup(fd);
    if (copy < 0 || lseek(copy, 0, SEEK_SET) != 0) {
        if (copy >= 0) close(copy);
        set_error(error, error_size, std::string("cannot read the open file: ") + std::strerror(errno));
        return MNF_SYSTEM;
    }
    FILE *file = fdopen(copy, "rb");
    if (!file) {
        close(copy);
        set_error(error, error_size, std::string("cannot read the open file: ") + std::strerror(errno));
        return MNF_SYSTEM;
    }
    int code = guarded(error, error_size, [&] {
        std::unique_ptr<faiss::Index> index(faiss::read_index(file));
        std::string problem = check_structure(index.get());
        if (!problem.empty()) {
            set_error(error, error_size, problem);
            return int(MNF_INVALID);
        }
        // A stored nprobe above the list count searches every list (FAISS clamps it per search);
        // clamp it here once so the reported default is the one a search uses.
        if (auto ivf = dynamic_cast<faiss::IndexIVF *>(index.get()); ivf && ivf->nprobe > ivf->nlist) ivf->nprobe = ivf->nlist;
        *out = new mnf_index{index.release(), {}};
        return int(MNF_OK);
    });
    if (code == MNF_FAILED) {
        // FAISS's READANDCHECK says "Error: 'ret == (size)' failed: read error in <name>: <got> !=
        // <wanted> (<strerror(errno)>)";
        // a reader over a FILE* has no name and errno is whatever the last call left, so say
        // what happened instead: the file ended early, or the read itself failed.
        std::string message(error);
        size_t at = message.find("read error in ");
        if (at != std::string::npos) {
            bool failed = std::ferror(file) != 0;
            size_t colon = message.find(": ", at), open = colon == std::string::npos ? colon : message.find(" (", colon);
            std::string counts = colon != std::string::npos && open != std::string::npos && open > colon
                ? message.substr(colon + 2, open - colon - 2) : std::string();
            size_t bang = counts.find(" != ");
            std::string detail = bang != std::string::npos
                ? " (read " + counts.substr(0, bang) + " of " + counts.substr(bang + 4) + " items)" : std::string();
            set_error(error, error_size, failed ? "a read from the file failed" + detail
                                                : "the file ends before the index does" + detail);
        }
    }
    std::fclose(file);
    return code;
}

static uint64_t current_address_space() {
    FILE *f = std::fopen("/proc/self/statm", "r");
    if (!f) return 0;
    unsigned long long pages = 0;
    int read = std::fscanf(f, "%llu", &pages);
    std::fclose(f);
    return read == 1 ? pages * uint64_t(sysconf(_SC_PAGESIZE)) : 0;
}

int mnf_check_fd_isolated(int fd, uint64_t extra_address_space, int timeout_ms, char *error, size_t error_size) {
    int fds[2];
    if (pipe(fds) != 0) {
        set_error(error, error_size, std::string("cannot create a pipe: ") + std::strerror(errno));
        return MNF_SYSTEM;
    }
    const uint64_t limit = current_address_space() + extra_address_space;
    pid_t pid = mn_fork();  // serialised with the package's other forks (OpenBLAS #2270)
    if (pid == 0) {
        // The child: default signal handling (a crash ends it quietly), limited memory.
        for (int s : {SIGSEGV, SIGBUS, SIGABRT, SIGILL, SIGFPE, SIGTRAP}) std::signal(s, SIG_DFL);
        close(fds[0]);
        if (limit > extra_address_space) {
            struct rlimit r = {rlim_t(limit), rlim_t(limit)};
            setrlimit(RLIMIT_AS, &r);
        }
        char message[1024] = {0};
        mnf_index *index = nullptr;
        int code = mnf_read_fd(fd, &index, message, sizeof message);
        // Not freed: the process ends now, and freeing a large index costs time.
        uint8_t header = uint8_t(code);
        ssize_t ignored = write(fds[1], &header, 1);
        ignored = write(fds[1], message, std::strlen(message));
        (void)ignored;
        close(fds[1]);
        _exit(0);
    }
    close(fds[1]);
    if (pid < 0) {
        close(fds[0]);
        set_error(error, error_size, std::string("cannot start the reader process: ") + std::strerror(errno));
        return MNF_SYSTEM;
    }
    std::string output;
    bool timed_out = false;
    auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    char buffer[4096];
    for (;;) {
        auto remaining = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()).count();
        if (remaining <= 0) { timed_out = true; break; }
        struct pollfd p = {fds[0], POLLIN, 0};
        int ready = poll(&p, 1, int(remaining < 1000 ? remaining : 1000));
        if (ready < 0) { if (errno == EINTR) continue; break; }
        if (ready == 0) continue;
        ssize_t got = read(fds[0], buffer, sizeof buffer);
        if (got < 0) { if (errno == EINTR) continue; break; }
        if (got == 0) break;
        output.append(buffer, size_t(got));
    }
    close(fds[0]);
    if (timed_out) kill(pid, SIGKILL);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
    if (timed_out) {
        set_error(error, error_size, "reading took longer than " + std::to_string(timeout_ms / 1000) + " s and was stopped");
        return MNF_TIMEOUT;
    }
    if (WIFSIGNALED(status) || output.empty()) {
        int s = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
        std::string name = s == SIGSEGV ? "a segmentation fault" : s == SIGABRT ? "an abort" : s == SIGBUS ? "a bus error"
                         : s == SIGKILL ? "killed (out of memory?)" : s ? "signal " + std::to_string(s) : "no result (out of memory?)";
        set_error(error, error_size, "the FAISS reader crashed on this file (" + name + ")");
        return MNF_CRASHED;
    }
    set_error(error, error_size, output.substr(1));
    return int(uint8_t(output[0]));
}

} // extern "C"
