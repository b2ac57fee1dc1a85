/* tests/fuzz/fuzz_assoc.cc — fuzz harness for the association layer: the node's real SCP
 * (scp_server_open: listener, worker pool, negotiation and AE policy, C-ECHO, C-STORE into a
 * SQLite store, C-FIND, release and abort handling) listens on an ephemeral loopback port, and
 * each input is the raw byte stream a client writes on one TCP connection (A-ASSOCIATE-RQ,
 * P-DATA-TF, A-RELEASE-RQ, ... as libFuzzer mutates them). The harness writes it all while
 * draining what the node answers, half-closes, then waits for the node to close the connection
 * and for its worker to go idle, so the node is done with the input when the harness returns.
 * End of input is end of stream (FIN), so no input waits for a timeout (they are short anyway).
 * A node that neither answers nor closes within FUZZ_HANG_MS is reported as a hang (abort). */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <dirent.h>
#include <openssl/crypto.h>

extern "C" {
#include "common/config.h"
#include "common/log.h"
#include "common/status.h"
#include "common/util.h"
#include "scp/scp.h"
#include "store/store.h"
#include "tests/fuzz/fuzz.h"
}

#define FUZZ_HANG_MS 15000

namespace {

store *g_st;
sn_config *g_cfg;
scp_server *g_srv;
int g_port;

sn_config *get_config(void *) { return sn_config_ref(g_cfg); }

/* scp_server_open binds port 0 to an ephemeral port; find it among our listening sockets. */
int find_listen_port()
{
    DIR *d = opendir("/proc/self/fd");
    int port = 0;
    struct dirent *e;
    while (d && (e = readdir(d)) != nullptr && !port) {
        int fd = atoi(e->d_name);
        int listening = 0;
        socklen_t len = sizeof listening;
        struct sockaddr_in sa;
        socklen_t salen = sizeof sa;
        if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) == 0 && listening &&
            getsockname(fd, (struct sockaddr *)&sa, &salen) == 0 && sa.sin_family == AF_INET)
            port = ntohs(sa.sin_port);
    }
    if (d)
        closedir(d);
    return port;
}

void stop()
{
    scp_server_close(g_srv, 0);
    g_srv = nullptr;
    store_close(g_st);
    sn_config_unref(g_cfg);
}

void init()
{
    sn_log_set_level(getenv("SEGNODE_FUZZ_LOG") ? SN_LOG_LEVEL_DEBUG : SN_LOG_LEVEL_OFF);
    scp_global_init();
    /* libcrypto's one-time set-up (config file, error state) on this thread: run first by an
     * SCP worker thread (the store's SHA-256) it leaves that thread's error state behind when the
     * thread ends, which LeakSanitizer reports at exit (904 bytes, once; libcrypto's, see
     * tests/fuzz/lsan.supp). The daemon may see the same report; it is not per association. */
    OPENSSL_init_crypto(OPENSSL_INIT_LOAD_CONFIG, nullptr);
    const char *scratch = fuzz_scratch_dir("assoc");
    char conf[8192], path[700], err[1024];
    snprintf(conf, sizeof conf,
             "[node]\n"
             "ae_title = SEGNODE\n"
             "bind = 127.0.0.1\n"
             "storage = %s/store\n"
             "http_port = 0\n"
             "max_associations = 4\n"
             "accept_unknown = yes\n"
             "acse_timeout = 2\n"
             "dimse_timeout = 2\n"
             "disk_min_free_mb = 0\n"
             "fsync = no\n"
             "[peer SCANNER]\n"
             "ae_title = SCANNER\n"
             "host = 127.0.0.1\n"
             "allow = echo, store, find\n"
             "stable_on_release = yes\n"
             "[peer ECHOONLY]\n"
             "ae_title = ECHOONLY\n"
             "allow = echo\n"
             "[route mr]\n"
             "modality = MR, CT\n"
             "method = atlas\n"
             "send_to = @caller\n",
             scratch);
    snprintf(path, sizeof path, "%s/segnode.conf", scratch);
    if (fuzz_write_file(path, conf, strlen(conf)) != 0 || sn_config_load(path, &g_cfg, err, sizeof err) != SN_OK) {
        fprintf(stderr, "fuzz_assoc: config: %s\n", err);
        abort();
    }
    g_cfg->node.port = 0; /* ephemeral: harnesses may run side by side */
    if (store_open(g_cfg->node.storage, &g_st, err, sizeof err) != SN_OK) {
        fprintf(stderr, "fuzz_assoc: store_open: %s\n", err);
        abort();
    }
    store_set_fsync(g_st, 0);
    if (scp_server_open(g_cfg, g_st, get_config, nullptr, &g_srv, err, sizeof err) != SN_OK) {
        fprintf(stderr, "fuzz_assoc: scp_server_open: %s\n", err);
        abort();
    }
    g_port = find_listen_port();
    if (!g_port) {
        fprintf(stderr, "fuzz_assoc: cannot find the SCP's port\n");
        abort();
    }
    atexit(stop);
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!g_srv)
        init();
    if (size > 512 * 1024)
        return 0;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)g_port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int crc = fd < 0 ? -1 : connect(fd, (struct sockaddr *)&sa, sizeof sa);
    if (crc != 0 && fd >= 0 && errno == EINTR) {
        /* A signal (libFuzzer's timers) interrupted a connect that waits for the node's accept
         * queue; the connection goes on in the background: wait for it, then ask how it went. */
        struct pollfd cp = {fd, POLLOUT, 0};
        int pr, soerr = 0;
        socklen_t sl = sizeof soerr;
        do
            pr = poll(&cp, 1, FUZZ_HANG_MS);
        while (pr < 0 && errno == EINTR);
        if (pr == 1 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) == 0 && soerr == 0)
            crc = 0;
        else
            errno = pr == 0 ? ETIMEDOUT : soerr ? soerr : errno;
    }
    if (crc != 0) {
        fprintf(stderr, "fuzz_assoc: connect: %s\n", strerror(errno));
        abort();
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);

    /* Write the input while reading the answers (a node blocked writing to a client that does
     * not read would look like a hang); then FIN, and read until the node closes. */
    size_t off = 0;
    bool wr_open = true;
    int64_t deadline = sn_mono_ms() + FUZZ_HANG_MS;
    char buf[65536];
    for (;;) {
        if (wr_open && off == size) {
            shutdown(fd, SHUT_WR);
            wr_open = false;
        }
        struct pollfd p = {fd, (short)(POLLIN | (wr_open ? POLLOUT : 0)), 0};
        int left = (int)(deadline - sn_mono_ms());
        if (left <= 0) {
            fprintf(stderr, "fuzz_assoc: the node neither answered nor closed the connection within %d ms "
                            "(%zu of %zu bytes written)\n", FUZZ_HANG_MS, off, size);
            abort();
        }
        if (poll(&p, 1, left) < 0 && errno != EINTR)
            break;
        if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
            ssize_t r = recv(fd, buf, sizeof buf, 0);
            if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR))
                break; /* closed (FIN or RST): the node is done with this connection */
            if (r > 0)
                deadline = sn_mono_ms() + FUZZ_HANG_MS;
        }
        if (wr_open && (p.revents & POLLOUT)) {
            ssize_t w = send(fd, data + off, size - off, MSG_NOSIGNAL);
            if (w > 0)
                off += (size_t)w;
            else if (w < 0 && errno != EAGAIN && errno != EINTR)
                wr_open = false; /* the node closed on us: what it got is the input */
        }
    }
    close(fd);
    /* The worker closes the connection a moment before it is done with the association (config
     * reference, counters): wait for that, so the input's work (and its memory) ends here. */
    int64_t idle_by = sn_mono_ms() + FUZZ_HANG_MS;
    while (scp_server_active(g_srv) > 0) {
        if (sn_mono_ms() > idle_by) {
            fprintf(stderr, "fuzz_assoc: the node still serves a closed connection after %d ms\n", FUZZ_HANG_MS);
            abort();
        }
        usleep(100);
    }
    return 0;
}
