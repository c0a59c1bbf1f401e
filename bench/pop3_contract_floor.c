/* The floor of mailtee's whole POP3 contract in C: what a compiled relay would pay.
 *
 * bench/contract_floor.py builds and starts it; bench/pop3_relay.py runs it as the
 * `contract` floor in the same run as direct Dovecot, mailtee and the other floors.
 *
 *     pop3_contract_floor LISTEN_PORT TARGET_PORT STATE_DIR [nopairs]
 *
 * (`nopairs`, for measuring by hand: no report pair is written, the rest is the same.)
 * One blocking thread per connection (no event loop), relaying POP3 in lockstep like
 * bench/pop3_floor.py, but every RETR gets the work mailtee's contract asks for, done at
 * C speed:
 *   - the body is forwarded as it arrives and dot-unstuffed into the copy;
 *   - SHA-256 of the copy (OpenSSL's libcrypto, as CPython's hashlib uses);
 *   - a journal record (24-byte frame, a ~600-byte report document, the message bytes)
 *     written with one pwritev into a pre-zeroed ring (a recycled segment) and covered
 *     by an fdatasync before the client gets the terminating ".\r\n" (invariant 1);
 *     group commit as in mailtee: one session flushes for every record written before
 *     its flush began, the others wait for that flush;
 *   - one log line per RETR (write(2) to a log file);
 *   - the report pair, off the ack path, by two pair-writer threads: `<stem>.eml`
 *     (create, write, close) and `<stem>.mpr` (temp name, write, rename), no fsync; a
 *     syncfs of the report directory per 16 MiB journalled (mailtee's segment retire).
 * Left out: limits, timeouts, TLS, the UIDL lookups mailtee makes when a client has not
 * listed (the bench's clients do), error replies. It answers "how far could a compiled
 * implementation of the same contract get on this machine?"
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

/* libcrypto.so.3 is on every machine that runs CPython's ssl; its headers need not be */
unsigned char *SHA256(const unsigned char *d, size_t n, unsigned char *md);

#define RING (64L << 20)
#define RECEIVE (256 * 1024)
#define RETIRE_BYTES (16L << 20)
#define PAIR_THREADS 2

static int ring_fd, log_fd, reports_fd, no_pairs;
static char reports_dir[4096];
static long ring_at, journalled;
static unsigned long stem_seq;
static pthread_mutex_t ring_lock = PTHREAD_MUTEX_INITIALIZER;
/* group commit: records written (whole) so far, records covered by a completed flush */
static unsigned long written_seq, synced_seq;
static int syncing;
static pthread_mutex_t sync_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t sync_cond = PTHREAD_COND_INITIALIZER;

struct pair {
    struct pair *next;
    char stem[64];
    char *doc;
    size_t doc_len;
    char *msg;
    size_t msg_len;
};
static struct pair *queue_head, *queue_tail;
static pthread_mutex_t queue_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t queue_cond = PTHREAD_COND_INITIALIZER;

static void die(const char *what) {
    perror(what);
    exit(1);
}

static int send_all(int fd, const char *p, size_t n) {
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

struct buf {
    char *p;
    size_t len, cap;
};

static void buf_add(struct buf *b, const char *p, size_t n) {
    if (b->len + n > b->cap) {
        b->cap = (b->len + n) * 2 + 4096;
        b->p = realloc(b->p, b->cap);
        if (!b->p) die("realloc");
    }
    memcpy(b->p + b->len, p, n);
    b->len += n;
}

static void buf_drop(struct buf *b, size_t n) {
    memmove(b->p, b->p + n, b->len - n);
    b->len -= n;
}

static int fill(int fd, struct buf *b) {
    if (b->cap - b->len < RECEIVE) {
        b->cap = b->len + RECEIVE * 2;
        b->p = realloc(b->p, b->cap);
        if (!b->p) die("realloc");
    }
    ssize_t r;
    do r = recv(fd, b->p + b->len, b->cap - b->len, 0);
    while (r < 0 && errno == EINTR);
    if (r <= 0) return -1;
    b->len += (size_t)r;
    return 0;
}

/* the next CRLF line of `b` (its length, CRLF included), reading `fd` as needed */
static long line(int fd, struct buf *b) {
    for (;;) {
        char *nl = memmem(b->p, b->len, "\r\n", 2);
        if (nl) return nl - b->p + 2;
        if (fill(fd, b) < 0) return -1;
    }
}

static void iso_now(char *out, size_t n) {
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    snprintf(out, n, "%04d-%02d-%02dT%02d:%02d:%02d.%06ldZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000);
}

static void hex(const unsigned char *d, size_t n, char *out) {
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[d[i] >> 4];
        out[2 * i + 1] = digits[d[i] & 15];
    }
    out[2 * n] = 0;
}

/* Return once a completed fdatasync covers every record written so far (ours too): the
 * first session to get here flushes for all, those arriving meanwhile wait for the
 * next flush, which covers them. */
static int barrier(void) {
    int failed = 0;
    pthread_mutex_lock(&sync_lock);
    unsigned long mine = ++written_seq;
    while (synced_seq < mine && !failed) {
        if (syncing) {
            pthread_cond_wait(&sync_cond, &sync_lock);
            continue;
        }
        syncing = 1;
        unsigned long upto = written_seq;
        pthread_mutex_unlock(&sync_lock);
        failed = fdatasync(ring_fd) < 0;
        pthread_mutex_lock(&sync_lock);
        syncing = 0;
        if (!failed) synced_seq = upto;
        pthread_cond_broadcast(&sync_cond);
    }
    pthread_mutex_unlock(&sync_lock);
    return failed ? -1 : 0;
}

static uint32_t crc_table[256];

static void crc_init(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0xedb88320u & -(c & 1));
        crc_table[i] = c;
    }
}

static uint32_t crc32_of(const char *p, size_t n) {
    uint32_t c = 0xffffffffu;
    for (size_t i = 0; i < n; i++) c = crc_table[(c ^ (unsigned char)p[i]) & 255] ^ (c >> 8);
    return ~c;
}

/* The copy of one RETR: journalled durably, logged, queued for its report pair. */
static int archive(const char *user, const char *msgno, const char *status, struct buf *copy) {
    unsigned char digest[32];
    char sha[65], at[96], stem[64];
    SHA256((const unsigned char *)copy->p, copy->len, digest);
    hex(digest, 32, sha);
    iso_now(at, sizeof at);
    unsigned long seq = __atomic_add_fetch(&stem_seq, 1, __ATOMIC_RELAXED);
    snprintf(stem, sizeof stem, "%ld-pop3-%016lx", (long)time(NULL), seq);
    char *doc = malloc(1024);
    if (!doc) die("malloc");
    int doc_len = snprintf(
        doc, 1024,
        "{\"format\": \"mailtee-mpr/2\", \"id\": \"%s\", \"direction\": \"incoming\", "
        "\"received\": \"%s\", \"size\": %zu, \"sha256\": \"%s\", \"client\": {\"ip\": "
        "\"127.0.0.1\", \"listener\": \"plain\", \"tls\": null}, \"target\": {\"host\": "
        "\"127.0.0.1\", \"port\": 110, \"tls\": null}, \"pop3\": {\"user\": \"%s\", "
        "\"uidl\": null, \"msg\": %s}, \"upstream\": {\"outcome\": \"delivered\", "
        "\"reply\": \"%.*s\", \"at\": \"%s\"}, \"archived\": true}",
        stem, at, copy->len, sha, user, msgno, (int)strcspn(status, "\r\n"), status, at);
    char frame[24];
    uint32_t hlen = (uint32_t)doc_len, dlen = (uint32_t)copy->len;
    memcpy(frame, "MTJR", 4);
    memset(frame + 4, 0, 8);
    memcpy(frame + 12, &hlen, 4);
    memcpy(frame + 16, &dlen, 4);
    uint32_t crc = crc32_of(doc, (size_t)doc_len);
    memcpy(frame + 20, &crc, 4);
    struct iovec iov[3] = {{frame, 24}, {doc, (size_t)doc_len}, {copy->p, copy->len}};
    size_t total = 24 + (size_t)doc_len + copy->len;
    pthread_mutex_lock(&ring_lock);
    long off = ring_at + (long)total <= RING ? ring_at : 0;
    ring_at = off + (long)total;
    pthread_mutex_unlock(&ring_lock);
    if (pwritev(ring_fd, iov, 3, off) != (ssize_t)total || barrier() < 0) {
        free(doc);
        return -1;
    }
    char logline[400];
    int n = snprintf(logline, sizeof logline,
                     "%s INFO mailtee.pop3: pop3 transaction listener=plain client=127.0.0.1 "
                     "user=%s msg=%s uidl=none size=%zu outcome=delivered archived=True\n",
                     at, user, msgno, copy->len);
    if (write(log_fd, logline, (size_t)n) < 0) die("write log");
    if (no_pairs) {
        free(doc);
        copy->len = 0;
        return 0;
    }
    struct pair *p = calloc(1, sizeof *p);
    if (!p) die("calloc");
    memcpy(p->stem, stem, sizeof stem);
    p->doc = doc;
    p->doc_len = (size_t)doc_len;
    p->msg = copy->p; /* the pair writer owns it now */
    p->msg_len = copy->len;
    copy->p = NULL;
    copy->len = copy->cap = 0;
    pthread_mutex_lock(&queue_lock);
    if (queue_tail) queue_tail->next = p;
    else queue_head = p;
    queue_tail = p;
    pthread_cond_signal(&queue_cond);
    pthread_mutex_unlock(&queue_lock);
    return 0;
}

static void write_file(const char *name, const char *p, size_t n) {
    int fd = openat(reports_fd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
    if (fd < 0) die("open report file");
    if (write(fd, p, n) != (ssize_t)n) die("write report file");
    close(fd);
}

static void *pair_writer(void *unused) {
    (void)unused;
    for (;;) {
        pthread_mutex_lock(&queue_lock);
        while (!queue_head) pthread_cond_wait(&queue_cond, &queue_lock);
        struct pair *p = queue_head;
        queue_head = p->next;
        if (!queue_head) queue_tail = NULL;
        pthread_mutex_unlock(&queue_lock);
        char name[96], tmp[96];
        snprintf(name, sizeof name, "%s.eml", p->stem);
        write_file(name, p->msg, p->msg_len);
        snprintf(tmp, sizeof tmp, ".%s.mpr.tmp", p->stem);
        snprintf(name, sizeof name, "%s.mpr", p->stem);
        write_file(tmp, p->doc, p->doc_len);
        if (renameat(reports_fd, tmp, reports_fd, name) < 0) die("rename");
        if (__atomic_add_fetch(&journalled, (long)p->msg_len, __ATOMIC_RELAXED) % RETIRE_BYTES <
            (long)p->msg_len)
            syncfs(reports_fd);
        free(p->msg);
        free(p->doc);
        free(p);
    }
    return NULL;
}

/* Relay one multi-line body, whose first `skip` bytes of `in` are not the server's (a
 * CRLF put in front so that an empty body's ".\r\n" is found like any terminator);
 * with `copy`, unstuff it there. The terminator stays in `in`'s past: the caller sends
 * it. Returns -1 when a peer failed. */
static int body(int up, int client, struct buf *in, size_t skip, struct buf *copy) {
    int at_line_start = 1;
    for (;;) {
        char *end = memmem(in->p, in->len, "\r\n.\r\n", 5);
        size_t take; /* bytes of `in` done with */
        if (end) take = (size_t)(end - in->p) + 2; /* through the CRLF before the "." */
        else take = in->len > 4 ? in->len - 4 : 0; /* a split terminator stays decidable */
        if (take > skip) {
            const char *p = in->p + skip, *stop = in->p + take;
            if (send_all(client, p, (size_t)(stop - p)) < 0) return -1;
            while (copy && p < stop) {
                if (at_line_start && *p == '.') p++; /* a stuffed dot */
                const char *nl = memchr(p, '\n', (size_t)(stop - p));
                const char *to = nl ? nl + 1 : stop;
                buf_add(copy, p, (size_t)(to - p));
                at_line_start = nl != NULL;
                p = to;
            }
        }
        if (take >= skip) {
            buf_drop(in, take);
            skip = 0;
        }
        if (end) {
            buf_drop(in, 3); /* ".\r\n" */
            return 0;
        }
        if (fill(up, in) < 0) return -1;
    }
}

struct conn {
    int client;
    int target;
};

static void *relay(void *arg) {
    struct conn *c = arg;
    int client = c->client, up = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)c->target)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    free(c);
    struct buf in = {0}, cmd = {0}, copy = {0};
    char user[128] = "none";
    if (up < 0 || connect(up, (struct sockaddr *)&sa, sizeof sa) < 0) goto out;
    setsockopt(up, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    long n = line(up, &in); /* the greeting */
    if (n < 0 || send_all(client, in.p, (size_t)n) < 0) goto out;
    buf_drop(&in, (size_t)n);
    for (;;) {
        long m = line(client, &cmd);
        if (m < 0 || send_all(up, cmd.p, (size_t)m) < 0) goto out;
        char text[256], word[8] = {0}, arg1[128] = {0};
        snprintf(text, sizeof text, "%.*s", (int)(m - 2 < 255 ? m - 2 : 255), cmd.p);
        sscanf(text, "%7s %127s", word, arg1);
        for (char *w = word; *w; w++) *w = (char)(*w & ~0x20);
        if (!strcmp(word, "USER")) snprintf(user, sizeof user, "%s", arg1);
        buf_drop(&cmd, (size_t)m);
        n = line(up, &in);
        if (n < 0 || send_all(client, in.p, (size_t)n) < 0) goto out;
        char status[256];
        snprintf(status, sizeof status, "%.*s", (int)(n < 255 ? n : 255), in.p);
        int ok = in.len >= 3 && !memcmp(in.p, "+OK", 3);
        buf_drop(&in, (size_t)n);
        int listing = !strcmp(word, "UIDL") || !strcmp(word, "LIST");
        int multi = ok && (!strcmp(word, "RETR") || !strcmp(word, "TOP") ||
                           !strcmp(word, "CAPA") || (listing && arg1[0] == 0));
        if (multi) {
            int retr = !strcmp(word, "RETR");
            struct buf b = {0};
            buf_add(&b, "\r\n", 2);
            buf_add(&b, in.p, in.len);
            in.len = 0;
            int failed = body(up, client, &b, 2, retr ? &copy : NULL) < 0 ||
                         (retr && archive(user, arg1, status, &copy) < 0) ||
                         send_all(client, ".\r\n", 3) < 0;
            buf_add(&in, b.p, b.len);
            free(b.p);
            if (failed) goto out;
            continue;
        }
        if (!strcmp(word, "QUIT")) goto out;
    }
out:
    free(in.p);
    free(cmd.p);
    free(copy.p);
    close(client);
    if (up >= 0) close(up);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 4 && !(argc == 5 && !strcmp(argv[4], "nopairs"))) {
        fprintf(stderr, "usage: %s LISTEN_PORT TARGET_PORT STATE_DIR [nopairs]\n", argv[0]);
        return 2;
    }
    no_pairs = argc == 5;
    int listen_port = atoi(argv[1]), target = atoi(argv[2]);
    crc_init();
    char path[4200];
    snprintf(reports_dir, sizeof reports_dir, "%s/reports", argv[3]);
    mkdir(reports_dir, 0750);
    reports_fd = open(reports_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    snprintf(path, sizeof path, "%s/journal.ring", argv[3]);
    ring_fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    snprintf(path, sizeof path, "%s/floor.log", argv[3]);
    log_fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
    if (reports_fd < 0 || ring_fd < 0 || log_fd < 0) die("open state");
    char *zeros = calloc(1, 1 << 20);
    for (long i = 0; i < RING >> 20; i++)
        if (write(ring_fd, zeros, 1 << 20) != 1 << 20) die("zero ring");
    free(zeros);
    if (fsync(ring_fd) < 0) die("fsync ring");
    for (int i = 0; i < PAIR_THREADS; i++) {
        pthread_t t;
        if (pthread_create(&t, NULL, pair_writer, NULL)) die("pthread_create");
    }
    int ls = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)listen_port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(ls, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(ls, 64) < 0) die("listen");
    for (;;) {
        int client = accept4(ls, NULL, NULL, SOCK_CLOEXEC);
        if (client < 0) continue;
        struct conn *c = malloc(sizeof *c);
        if (!c) die("malloc");
        c->client = client;
        c->target = target;
        pthread_t t;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        if (pthread_create(&t, &attr, relay, c)) close(client);
        pthread_attr_destroy(&attr);
    }
}
