/* loadgen.c: a compiled MQTT 3.1.1 and MQTT 5 load generator for bench/throughput.py (one process, epoll,
 * non-blocking sockets), so that the generator is not the ceiling when a broker is measured.
 *
 * Built by bench/throughput.py with `cc -O2`. Driven over stdin/stdout:
 *   loadgen --port P --users FILE --mode dm|idle --scheme inbox|chat [--window W] [--pending N] [--protocol 4|5]
 * --protocol 5 speaks MQTT 5 (protocol level 5, an empty property list on CONNECT, SUBSCRIBE and PUBLISH; the
 * properties of what arrives are skipped), the same packets otherwise.
 * FILE has one user per line: "name<TAB>password<TAB>group,group" (password "-": anonymous, no groups: "-").
 * It connects and subscribes every user (clean session, keep-alive 0, at most N handshakes pending),
 * then prints  READY {"connack_s":..,"suback_s":..,...}  and waits for a command on stdin:
 *   GO <start_ns> <end_ns>  (dm) publish QoS 1 messages from random users to random other users' inboxes
 *        (scheme chat: half DMs to dm/{to}/{me}, half to one of the sender's groups group/{g}/{me}),
 *        keeping W deliveries outstanding in total (a DM is one delivery, a group message one per member);
 *        every delivery is PUBACKed. Deliveries arriving between start and end (CLOCK_MONOTONIC) are
 *        counted; then it prints  RESULT {...}  and stops publishing; it exits at EOF on stdin.
 *   STORM  (idle) drops every connection at once (RST) and reconnects and resubscribes them all, prints
 *        RESULT {"connack_s":..,"suback_s":..}, then waits for EOF on stdin.
 * A delivery outstanding longer than 5 s is written off and counted as lost.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>

enum { DOWN, CONNECTING, WAIT_CONNACK, WAIT_SUBACK, READY };
#define SLOTS (1u << 18)
#define HIST 100000 /* 10 us buckets: 1 s */
#define LOST_NS 5000000000ull
#define PAYLOAD 100

typedef struct { char *p; size_t len, cap; } Buf;
typedef struct {
    int fd, state, dirty, want_out;
    uint16_t pid;
    Buf in, out;
} Conn;
typedef struct { char *name, *pass; int *groups, ngroups; } User;
typedef struct { uint32_t seq; int32_t left; uint64_t sent; } Slot;

static User *users; static int nusers;
static char **gnames; static int *gsize; static int ngroups;
static Conn *conns; static int epfd;
static Conn **dirty_list; static int ndirty;
static int *queue; static int qhead, qtail, qcap; /* users waiting to connect */
static int pending, pending_max = 200, nready, nconnacked;
static int chat, mode_dm, window = 200, port, v5;
static long retries, refused_subs, disconnects, dups, lost, acks;
static Slot *slots; static uint32_t next_seq = 1, oldest = 1; static long outstanding;
static uint32_t *hist; static uint64_t win_start, win_end, delivered, published;
static uint64_t rng = 88172645463325252ull;
static char scratch[1 << 18];

static uint64_t now_ns(void) {
    struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}
static uint64_t rnd(void) { rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17; return rng; }
static void die(const char *what) { perror(what); exit(1); }

static void put(Buf *b, const void *data, size_t n) {
    if (b->len + n > b->cap) {
        b->cap = (b->len + n) * 2 + 64;
        if (!(b->p = realloc(b->p, b->cap))) die("realloc");
    }
    memcpy(b->p + b->len, data, n); b->len += n;
}
static void put_u16(Buf *b, unsigned v) { unsigned char x[2] = {v >> 8, v & 255}; put(b, x, 2); }
static void put_str(Buf *b, const char *s) { put_u16(b, strlen(s)); put(b, s, strlen(s)); }
static void put_header(Buf *b, unsigned char type, size_t len) {
    unsigned char x[5]; int n = 0; x[n++] = type;
    do { x[n] = len & 127; len >>= 7; if (len) x[n] |= 128; n++; } while (len);
    put(b, x, n);
}

static void watch(int i) {
    Conn *c = &conns[i];
    struct epoll_event ev = {.data.u32 = (uint32_t)i};
    ev.events = c->state == CONNECTING ? EPOLLOUT : (EPOLLIN | (c->want_out ? EPOLLOUT : 0));
    if (epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev) < 0) die("epoll_ctl");
}
static void mark(int i) { if (!conns[i].dirty) { conns[i].dirty = 1; dirty_list[ndirty++] = &conns[i]; } }

static void enqueue(int i) { queue[qtail] = i; qtail = (qtail + 1) % qcap; }

static void drop(int i, int failed) { /* close a connection; before READY it goes back in the queue */
    Conn *c = &conns[i];
    if (c->fd < 0) return;
    close(c->fd); c->fd = -1; c->in.len = c->out.len = 0; c->want_out = 0;
    if (c->state == READY) { nready--; disconnects++; }
    else { pending--; if (failed) { retries++; enqueue(i); } }
    if (c->state >= WAIT_SUBACK) nconnacked--;
    c->state = DOWN;
}

static void start_connects(void) {
    while (pending < pending_max && qhead != qtail) {
        int i = queue[qhead]; qhead = (qhead + 1) % qcap;
        Conn *c = &conns[i];
        c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        if (c->fd < 0) die("socket");
        int one = 1; setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (connect(c->fd, (struct sockaddr *)&a, sizeof a) < 0 && errno != EINPROGRESS) die("connect");
        c->state = CONNECTING; pending++;
        struct epoll_event ev = {.events = EPOLLOUT, .data.u32 = (uint32_t)i};
        if (epoll_ctl(epfd, EPOLL_CTL_ADD, c->fd, &ev) < 0) die("epoll_ctl add");
    }
}

static void send_connect(int i) {
    User *u = &users[i]; Buf body = {0}; int anon = strcmp(u->pass, "-") == 0;
    put_str(&body, "MQTT");
    unsigned char lvl[2] = {v5 ? 5 : 4, 0x02 | (anon ? 0 : 0xC0)}; put(&body, lvl, 2); put_u16(&body, 0);
    if (v5) put(&body, "", 1); /* no properties */
    char id[128]; snprintf(id, sizeof id, "lg-%s", u->name); put_str(&body, id);
    if (!anon) { put_str(&body, u->name); put_str(&body, u->pass); }
    put_header(&conns[i].out, 0x10, body.len); put(&conns[i].out, body.p, body.len); free(body.p);
    mark(i);
}

static void send_subscribe(int i) {
    User *u = &users[i]; Buf body = {0}; char f[256];
    put_u16(&body, 1);
    if (v5) put(&body, "", 1);
    if (chat) snprintf(f, sizeof f, "dm/%s/+", u->name); else snprintf(f, sizeof f, "inbox/%s", u->name);
    put_str(&body, f); put(&body, "\1", 1);
    for (int g = 0; chat && g < u->ngroups; g++) {
        snprintf(f, sizeof f, "group/%s/+", gnames[u->groups[g]]); put_str(&body, f); put(&body, "\1", 1);
    }
    put_header(&conns[i].out, 0x82, body.len); put(&conns[i].out, body.p, body.len); free(body.p);
    mark(i);
}

static void publish(void) { /* one QoS 1 message from a random ready user */
    int from = rnd() % nusers, to = from, group = -1;
    if (conns[from].state != READY) return;
    if (chat && users[from].ngroups && (rnd() & 1)) group = users[from].groups[rnd() % users[from].ngroups];
    else if (nusers > 1) { do to = rnd() % nusers; while (to == from); }
    else to = from;
    uint32_t seq = next_seq++;
    if (seq - oldest >= SLOTS) oldest = seq - SLOTS + 1; /* never reached with the default window */
    Slot *s = &slots[seq % SLOTS];
    s->seq = seq; s->left = group >= 0 ? gsize[group] : 1; s->sent = now_ns();
    outstanding += s->left; published++;
    char topic[256], payload[PAYLOAD + 1];
    if (group >= 0) snprintf(topic, sizeof topic, "group/%s/%s", gnames[group], users[from].name);
    else if (chat) snprintf(topic, sizeof topic, "dm/%s/%s", users[to].name, users[from].name);
    else snprintf(topic, sizeof topic, "inbox/%s", users[to].name);
    int n = snprintf(payload, sizeof payload, "{\"id\":\"%010u\",\"t\":\"%020llu\",\"body\":\"", seq, (unsigned long long)s->sent);
    memset(payload + n, 'x', PAYLOAD - n - 2); memcpy(payload + PAYLOAD - 2, "\"}", 2);
    Conn *c = &conns[from]; c->pid = c->pid % 65535 + 1;
    put_header(&c->out, 0x32, 2 + strlen(topic) + 2 + v5 + PAYLOAD);
    put_str(&c->out, topic); put_u16(&c->out, c->pid); if (v5) put(&c->out, "", 1); put(&c->out, payload, PAYLOAD);
    mark(from);
}

static void on_delivery(const unsigned char *p, size_t n, uint64_t now) {
    if (n < 41 || memcmp(p, "{\"id\":\"", 7) != 0) return; /* a chat message: {"id", "body"} */
    uint32_t seq = (uint32_t)strtoul((const char *)p + 7, NULL, 10);
    Slot *s = &slots[seq % SLOTS];
    if (s->seq != seq || s->left <= 0) { dups++; return; }
    s->left--; outstanding--;
    if (now >= win_start && now < win_end) {
        delivered++;
        uint64_t b = (now - s->sent) / 10000; hist[b < HIST ? b : HIST - 1]++;
    }
}

static size_t skip_properties(const unsigned char *b, size_t at, size_t len) { /* MQTT 5: past a property list */
    size_t n = 0, k = at; int shift = 0;
    while (k < len) { n |= (size_t)(b[k] & 127) << shift; shift += 7; if (!(b[k++] & 128)) break; }
    return k + n;
}

static size_t parse(int i, const unsigned char *p, size_t n, uint64_t now) { /* returns bytes used */
    size_t at = 0; Conn *c = &conns[i];
    while (n - at >= 2) {
        size_t len = 0, k = at + 1; int shift = 0;
        for (;;) {
            if (k >= n) return at;
            len |= (size_t)(p[k] & 127) << shift; shift += 7;
            if (!(p[k++] & 128)) break;
        }
        if (k + len > n) return at;
        const unsigned char *b = p + k; unsigned type = p[at] >> 4;
        if (type == 2) {
            if (len < 2 || b[1] != 0) { fprintf(stderr, "CONNACK refused (%d) for %s\n", len < 2 ? -1 : b[1], users[i].name); exit(3); }
            c->state = WAIT_SUBACK; nconnacked++; send_subscribe(i);
        } else if (type == 9) {
            for (size_t j = v5 ? skip_properties(b, 2, len) : 2; j < len; j++) if (b[j] & 0x80) refused_subs++;
            if (c->state == WAIT_SUBACK) { c->state = READY; pending--; nready++; }
        } else if (type == 3) {
            unsigned qos = (p[at] >> 1) & 3; size_t t = ((size_t)b[0] << 8 | b[1]) + 2;
            if (qos) { unsigned char ack[4] = {0x40, 2, b[t], b[t + 1]}; put(&c->out, ack, 4); mark(i); t += 2; }
            if (v5) t = skip_properties(b, t, len);
            if (t > len) t = len;
            on_delivery(b + t, len - t, now);
        } else if (type == 4) acks++;
        at = k + len;
    }
    return at;
}

static void on_readable(int i, uint64_t now) {
    Conn *c = &conns[i];
    for (;;) {
        ssize_t r = read(c->fd, scratch, sizeof scratch);
        if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) { drop(i, 1); return; }
        if (r < 0) return;
        if (c->in.len) {
            put(&c->in, scratch, r);
            size_t used = parse(i, (unsigned char *)c->in.p, c->in.len, now);
            if (c->fd < 0) return;
            memmove(c->in.p, c->in.p + used, c->in.len - used); c->in.len -= used;
        } else {
            size_t used = parse(i, (unsigned char *)scratch, r, now);
            if (c->fd < 0) return;
            if (used < (size_t)r) put(&c->in, scratch + used, r - used);
        }
        if ((size_t)r < sizeof scratch) return;
    }
}

static void flush(int i) {
    Conn *c = &conns[i];
    if (c->fd < 0) { c->out.len = 0; return; }
    size_t done = 0;
    while (done < c->out.len) {
        ssize_t w = write(c->fd, c->out.p + done, c->out.len - done);
        if (w < 0) { if (errno == EAGAIN) break; if (errno == EINTR) continue; drop(i, 1); return; }
        done += w;
    }
    memmove(c->out.p, c->out.p + done, c->out.len - done); c->out.len -= done;
    int want = c->out.len > 0;
    if (want != c->want_out) { c->want_out = want; watch(i); }
}

static void load_users(const char *path) {
    FILE *f = fopen(path, "r"); if (!f) die(path);
    char line[4096]; int cap = 1024; users = calloc(cap, sizeof *users);
    int gcap = 1024; gnames = calloc(gcap, sizeof *gnames); gsize = calloc(gcap, sizeof *gsize);
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\r\n")] = 0;
        char *name = strtok(line, "\t"), *pass = strtok(NULL, "\t"), *groups = strtok(NULL, "\t");
        if (!name || !pass) continue;
        if (nusers == cap) users = realloc(users, (cap *= 2) * sizeof *users);
        User *u = &users[nusers++]; u->name = strdup(name); u->pass = strdup(pass);
        u->groups = calloc(64, sizeof(int)); u->ngroups = 0;
        for (char *g = groups && strcmp(groups, "-") ? strtok(groups, ",") : NULL; g && u->ngroups < 64; g = strtok(NULL, ",")) {
            int k = 0; while (k < ngroups && strcmp(gnames[k], g)) k++; /* few groups per run: linear is fine */
            if (k == ngroups) {
                if (ngroups == gcap) { gcap *= 2; gnames = realloc(gnames, gcap * sizeof *gnames); gsize = realloc(gsize, gcap * sizeof *gsize); }
                gnames[ngroups] = strdup(g); gsize[ngroups++] = 0;
            }
            gsize[k]++; u->groups[u->ngroups++] = k;
        }
    }
    fclose(f);
}

static double quantile(double q) {
    uint64_t total = 0, seen = 0; for (int b = 0; b < HIST; b++) total += hist[b];
    for (int b = 0; b < HIST; b++) { seen += hist[b]; if (total && seen >= q * total) return (b + 0.5) / 100.0; }
    return 0;
}

int main(int argc, char **argv) {
    const char *path = NULL; int idle = 0;
    for (int a = 1; a + 1 < argc; a += 2) {
        if (!strcmp(argv[a], "--port")) port = atoi(argv[a + 1]);
        else if (!strcmp(argv[a], "--users")) path = argv[a + 1];
        else if (!strcmp(argv[a], "--mode")) { mode_dm = !strcmp(argv[a + 1], "dm"); idle = !mode_dm; }
        else if (!strcmp(argv[a], "--scheme")) chat = !strcmp(argv[a + 1], "chat");
        else if (!strcmp(argv[a], "--window")) window = atoi(argv[a + 1]);
        else if (!strcmp(argv[a], "--pending")) pending_max = atoi(argv[a + 1]);
        else if (!strcmp(argv[a], "--protocol")) v5 = atoi(argv[a + 1]) == 5;
        else if (!strcmp(argv[a], "--seed")) rng ^= strtoull(argv[a + 1], NULL, 10) * 0x9E3779B97F4A7C15ull;
        else { fprintf(stderr, "unknown option %s\n", argv[a]); return 2; }
    }
    if (!port || !path || (!mode_dm && !idle) || window < 1 || window > (int)SLOTS / 2) {
        fprintf(stderr, "usage: loadgen --port P --users FILE --mode dm|idle [--scheme inbox|chat] [--window W<=%u] [--pending N] [--protocol 4|5]\n", SLOTS / 2);
        return 2;
    }
    struct rlimit lim; getrlimit(RLIMIT_NOFILE, &lim); lim.rlim_cur = lim.rlim_max; setrlimit(RLIMIT_NOFILE, &lim);
    load_users(path);
    if (nusers + 16 > (int)lim.rlim_cur) { fprintf(stderr, "%d users need more than the %ld open files allowed\n", nusers, (long)lim.rlim_cur); return 2; }
    conns = calloc(nusers, sizeof *conns); dirty_list = calloc(nusers, sizeof *dirty_list);
    qcap = nusers + 1; queue = calloc(qcap, sizeof *queue);
    slots = calloc(SLOTS, sizeof *slots); hist = calloc(HIST, sizeof *hist);
    for (int i = 0; i < nusers; i++) { conns[i].fd = -1; enqueue(i); }
    if ((epfd = epoll_create1(0)) < 0) die("epoll_create1");
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = UINT32_MAX};
    epoll_ctl(epfd, EPOLL_CTL_ADD, 0, &ev);
    static struct epoll_event evs[4096];
    uint64_t began = now_ns(), connack_at = 0;
    int phase = 0; /* phase 0 connecting, 1 ready/idle, 2 running, 3 storm */
    int go = 0;
    for (;;) {
        int n = epoll_wait(epfd, evs, 4096, 5);
        if (n < 0 && errno != EINTR) die("epoll_wait");
        uint64_t now = now_ns();
        for (int e = 0; e < n; e++) {
            uint32_t i = evs[e].data.u32;
            if (i == UINT32_MAX) {
                char cmd[256]; ssize_t r = read(0, cmd, sizeof cmd - 1);
                if (r <= 0) return 0;
                cmd[r] = 0;
                unsigned long long s, t;
                if (sscanf(cmd, "GO %llu %llu", &s, &t) == 2) { win_start = s; win_end = t; go = 1; phase = 2; }
                else if (!strncmp(cmd, "STORM", 5)) {
                    struct linger l = {1, 0};
                    for (int k = 0; k < nusers; k++) if (conns[k].fd >= 0) setsockopt(conns[k].fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
                    for (int k = 0; k < nusers; k++) if (conns[k].state == READY) { drop(k, 0); enqueue(k); }
                    disconnects = 0; began = now_ns(); connack_at = 0; phase = 3;
                }
                continue;
            }
            Conn *c = &conns[i];
            if (c->fd < 0) continue;
            if (c->state == CONNECTING) {
                int err = 0; socklen_t len = sizeof err;
                getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
                if (err) { drop(i, 1); continue; }
                c->state = WAIT_CONNACK; send_connect(i); watch(i);
                continue;
            }
            if (evs[e].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) on_readable(i, now);
            if (c->fd >= 0 && (evs[e].events & EPOLLOUT)) flush(i);
        }
        start_connects();
        if ((phase == 0 || phase == 3) && !connack_at && nconnacked >= nusers) connack_at = now;
        if ((phase == 0 || phase == 3) && nready == nusers) {
            printf("%s {\"connack_s\":%.3f,\"suback_s\":%.3f,\"retries\":%ld,\"refused_subscriptions\":%ld,\"users\":%d}\n",
                   phase == 0 ? "READY" : "RESULT", (connack_at - began) / 1e9, (now_ns() - began) / 1e9, retries, refused_subs, nusers);
            fflush(stdout); phase = 1;
        }
        if (go) {
            while (oldest < next_seq) { /* write off deliveries that never came */
                Slot *s = &slots[oldest % SLOTS];
                if (s->seq == oldest && s->left > 0) {
                    if (now - s->sent < LOST_NS) break;
                    lost += s->left; outstanding -= s->left; s->left = 0;
                }
                oldest++;
            }
            if (now < win_end) for (int tries = 0; outstanding < window && tries < 4 * window; tries++) publish();
            else {
                printf("RESULT {\"delivered\":%llu,\"seconds\":%.3f,\"published\":%llu,\"lost\":%ld,\"duplicates\":%ld,"
                       "\"disconnects\":%ld,\"p50_ms\":%.2f,\"p99_ms\":%.2f,\"users\":%d}\n",
                       (unsigned long long)delivered, (win_end - win_start) / 1e9, (unsigned long long)published, lost, dups,
                       disconnects, quantile(0.5), quantile(0.99), nusers);
                fflush(stdout);
                go = 0; phase = 1; /* stay (idle) until stdin closes, so the caller can read our CPU time */
            }
        }
        for (int d = 0; d < ndirty; d++) {
            Conn *c = dirty_list[d]; c->dirty = 0; flush((int)(c - conns));
        }
        ndirty = 0;
    }
}
