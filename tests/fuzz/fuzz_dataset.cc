/* tests/fuzz/fuzz_dataset.cc — fuzz harness for what the SCP does with a received data set: the
 * bytes are the file DIMSE_receiveDataSetInFile leaves in the store's tmp/ (a Part 10 file: meta
 * header + data set), and they go through the SCP's own scp__check_and_commit (parse, UID checks
 * against the C-STORE request, index metadata, store_instance_commit into a SQLite store in a
 * scratch folder), then the series is completed against a config with routes (job creation) and
 * read back the way `segnode series`, C-FIND and the worker read it.
 * The request's Affected SOP Class/Instance UIDs are taken from the data set when it has them
 * (an honest sender), so fuzzed data sets reach the index; the transfer syntax is the meta
 * header's. The store is recreated every FUZZ_STORE_RECYCLE inputs to bound disk use. */
#include "scp/scpInt.h"

#include <stdio.h>
#include <string.h>

extern "C" {
#include "common/config.h"
#include "common/log.h"
#include "store/store.h"
#include "tests/fuzz/fuzz.h"
}

#define FUZZ_STORE_RECYCLE 2000

namespace {

const char *g_scratch;
store *g_st;
sn_config *g_cfg;
int g_inputs;
bool g_verbose;

const char g_conf[] =
    "[node]\n"
    "ae_title = SEGNODE\n"
    "accept_unknown = yes\n"
    "[peer SCANNER]\n"
    "ae_title = SCANNER\n"
    "allow = echo, store, find\n"
    "[route mr]\n"
    "modality = MR, PT\n"
    "method = atlas\n"
    "send_to = @caller\n"
    "continue = yes\n"
    "[route ct]\n"
    "modality = CT\n"
    "body_part = ABDOMEN, CHEST\n"
    "series_description = ^(ax|cor).*\n"
    "image_type = ORIGINAL\n"
    "method = atlas\n"
    "send_to = SCANNER\n";

void open_store()
{
    char dir[700], err[512];
    snprintf(dir, sizeof dir, "%s/store", g_scratch);
    if (g_st) {
        store_close(g_st);
        g_st = nullptr;
        fuzz_rm_rf(dir);
    }
    if (store_open(dir, &g_st, err, sizeof err) != SN_OK) {
        fprintf(stderr, "fuzz_dataset: store_open: %s\n", err);
        abort();
    }
    store_set_fsync(g_st, 0); /* durability is not under test; speed is */
}

void init()
{
    g_verbose = getenv("SEGNODE_FUZZ_VERBOSE") != nullptr;
    sn_log_set_level(SN_LOG_LEVEL_OFF);
    scp_global_init();
    g_scratch = fuzz_scratch_dir("dataset");
    char path[700], err[1024];
    snprintf(path, sizeof path, "%s/segnode.conf", g_scratch);
    if (fuzz_write_file(path, g_conf, sizeof g_conf - 1) != 0 ||
        sn_config_load(path, &g_cfg, err, sizeof err) != SN_OK) {
        fprintf(stderr, "fuzz_dataset: config: %s\n", err);
        abort();
    }
    open_store();
}

int count_row(void *ctx, const store_series_row *) { return ++*(int *)ctx, 0; }
int count_inst(void *ctx, const char *, const char *, const char *) { return ++*(int *)ctx, 0; }
int count_find(void *ctx, const store_find_row *) { return ++*(int *)ctx, 0; }
int count_job(void *ctx, const store_job_row *) { return ++*(int *)ctx, 0; }

/* A value longer than what loadFile loaded (4 KiB) counts as absent: DCMTK would reserve its
 * claimed length, up to 4 GiB, before finding the data missing. (The SCP loads the same file
 * with the same limit, where DCMTK refuses such a length as beyond the end of the file.) */
std::string str_of(DcmItem *ds, const DcmTagKey &tag)
{
    DcmElement *el = nullptr;
    OFString v;
    if (ds && ds->findAndGetElement(tag, el).good() && el && el->getLength() <= 4096 &&
        el->getOFStringArray(v).good())
        return scp__trim(v.c_str());
    return std::string();
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!g_st)
        init();
    if (size > 1024 * 1024)
        return 0;
    if (++g_inputs % FUZZ_STORE_RECYCLE == 0)
        open_store();

    char tmp[4096], err[512];
    if (store_tmp_create(g_st, tmp, sizeof tmp, err, sizeof err) != SN_OK ||
        fuzz_write_file(tmp, data, size) != 0) {
        fprintf(stderr, "fuzz_dataset: scratch write failed: %s\n", err);
        abort();
    }

    /* What the sender would have put in the C-STORE-RQ and what was negotiated. */
    T_DIMSE_C_StoreRQ req;
    memset(&req, 0, sizeof req);
    std::string ts = UID_LittleEndianExplicitTransferSyntax;
    {
        DcmFileFormat ff;
        ff.loadFile(OFFilename(tmp), EXS_Unknown, EGL_noChange, 4096, ERM_autoDetect);
        std::string cls = str_of(ff.getDataset(), DCM_SOPClassUID);
        std::string inst = str_of(ff.getDataset(), DCM_SOPInstanceUID);
        std::string mts = str_of(ff.getMetaInfo(), DCM_TransferSyntaxUID);
        OFStandard::strlcpy(req.AffectedSOPClassUID, cls.empty() ? UID_CTImageStorage : cls.c_str(),
                            sizeof req.AffectedSOPClassUID);
        OFStandard::strlcpy(req.AffectedSOPInstanceUID, inst.empty() ? "1.2.3.4" : inst.c_str(),
                            sizeof req.AffectedSOPInstanceUID);
        if (!mts.empty())
            ts = mts;
    }

    Uint16 status = 0;
    std::string comment, series;
    int64_t stored = 0;
    if (!scp__check_and_commit(g_st, "SCANNER", "SEGNODE", req, tmp, ts.c_str(), status, comment,
                               series, stored)) {
        if (status == 0)
            __builtin_trap(); /* a refusal must carry a DIMSE failure status */
        if (g_verbose)
            fprintf(stderr, "fuzz_dataset: refused 0x%04x: %s\n", status, comment.c_str());
        store_tmp_discard(g_st, tmp);
        return 0;
    }

    /* Stored: the index must give it back, and routing must cope with whatever it holds. */
    int n = 0;
    if (store_series_list(g_st, series.c_str(), count_row, &n, err, sizeof err) != SN_OK || n != 1) {
        fprintf(stderr, "fuzz_dataset: stored series %s not listed (%d): %s\n", series.c_str(), n, err);
        __builtin_trap();
    }
    n = 0;
    if (store_instance_list(g_st, series.c_str(), count_inst, &n, err, sizeof err) != SN_OK || n < 1) {
        fprintf(stderr, "fuzz_dataset: stored instance of %s not listed: %s\n", series.c_str(), err);
        __builtin_trap();
    }
    store_find_query q;
    memset(&q, 0, sizeof q);
    q.series_uid = series.c_str();
    n = 0;
    if (store_find_series(g_st, &q, count_find, &n, err, sizeof err) != SN_OK || n < 1) {
        fprintf(stderr, "fuzz_dataset: C-FIND does not find series %s: %s\n", series.c_str(), err);
        __builtin_trap();
    }
    store_find_query wild;
    memset(&wild, 0, sizeof wild);
    wild.patient_name = "*A?*";
    wild.study_date = "19000101-20991231";
    n = 0;
    (void)store_find_studies(g_st, &wild, count_find, &n, err, sizeof err);
    int rc = store_series_complete(g_st, series.c_str(), g_cfg, err, sizeof err);
    if (rc != SN_OK) {
        fprintf(stderr, "fuzz_dataset: completing series %s: %s\n", series.c_str(), err);
        __builtin_trap();
    }
    n = 0;
    (void)store_job_list(g_st, count_job, &n, err, sizeof err);
    if (g_verbose)
        fprintf(stderr, "fuzz_dataset: stored %lld bytes in series %s; %d job(s) in the store\n",
                (long long)stored, series.c_str(), n);
    return 0;
}
