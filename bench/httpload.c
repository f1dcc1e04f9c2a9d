/* httpload.c: a compiled HTTP/1.1 load generator for bench/api_storm.py (one process, epoll, non-blocking
 * keep-alive connections), so that the client is not the ceiling when the API's p99 is measured.
 *
 * Built by bench/api_storm.py with `cc -O2` (bench/throughput.py's build_loadgen). Usage:
 *   httpload --port P --requests FILE --latencies OUT [--connections 16] [--rounds 1]
 * FILE has one request per line: "phone<TAB>token<TAB>path", the lines of one phone next to each other, in
 * the order its phone sends them (sync pages following `next`, then history pages). Each request's bytes
 * (GET path, Host, Authorization: Bearer token) are built once at start-up. Each of the C connections takes
 * the next phone and sends its requests one after another (one outstanding per connection, as a phone does),
 * then takes the next phone; --rounds plays every phone that many times.
 * Every answer must be HTTP 200 with a Content-Length body; anything else is counted as an error.
 * OUT gets each request's line number in FILE (from 0) and its latency in nanoseconds (CLOCK_MONOTONIC, from
 * the first byte written to the last byte of the answer read), "line latency", one answer per line. At the end it prints one line of JSON:
 *   {"requests":..,"errors":..,"bytes":..,"elapsed_s":..,"cpu_s":..}   (cpu_s: its own user + system time)
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

typedef struct { char *p; size_t len; } Request;
typedef struct { int first, count; } Phone;
typedef struct {
    int fd, phone, next; /* the phone it plays and the index of its next request (within the phone) */
    size_t sent, have, cap;
    char *in;
    uint64_t started;
} Conn;

static Request *requests; static int nrequests;
static Phone *phones; static int nphones;
static Conn *conns; static int nconns = 16;
static int port, rounds = 1, epfd, queued; /* queued: phones handed out so far, over all rounds */
static uint64_t *latencies; static int *answered; static long done, errors, total; static uint64_t bytes;

static uint64_t now_ns(void) {
    struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}
static void die(const char *what) { perror(what); exit(1); }

static void load(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) die(path);
    char *line = NULL; size_t size = 0; ssize_t n; char last[256] = "";
    int cap = 1024, pcap = 64;
    requests = malloc(sizeof(Request) * cap); phones = malloc(sizeof(Phone) * pcap);
    while ((n = getline(&line, &size, f)) > 0) {
        if (line[n - 1] == '\n') line[--n] = 0;
        char *token = strchr(line, '\t'); if (!token) continue; *token++ = 0;
        char *target = strchr(token, '\t'); if (!target) continue; *target++ = 0;
        if (nrequests == cap) requests = realloc(requests, sizeof(Request) * (cap *= 2));
        if (!nphones || strcmp(last, line)) {
            if (nphones == pcap) phones = realloc(phones, sizeof(Phone) * (pcap *= 2));
            phones[nphones++] = (Phone){nrequests, 0};
            snprintf(last, sizeof last, "%s", line);
        }
        phones[nphones - 1].count++;
        Request *r = &requests[nrequests++];
        r->p = malloc(strlen(target) + strlen(token) + 128);
        r->len = sprintf(r->p, "GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nAuthorization: Bearer %s\r\n\r\n",
                         target, port, token);
    }
    free(line); fclose(f);
    if (!nrequests) { fprintf(stderr, "httpload: no requests in %s\n", path); exit(1); }
}

static void connect_one(Conn *c) {
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    if (c->fd < 0) die("socket");
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(c->fd, (struct sockaddr *)&a, sizeof a)) die("connect"); /* blocking: once, before timing */
    if (fcntl(c->fd, F_SETFL, O_NONBLOCK)) die("fcntl"); /* a read past the answer returns EAGAIN, never waits */
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, c->fd, &ev)) die("epoll_ctl");
}

/* Write the connection's next request; a false return: no phone left for it. */
static int send_next(Conn *c) {
    while (c->phone < 0 || c->next == phones[c->phone].count) {
        if (queued == nphones * rounds) return 0;
        c->phone = queued++ % nphones; c->next = 0;
    }
    Request *r = &requests[phones[c->phone].first + c->next];
    c->started = now_ns();
    c->sent = 0;
    while (c->sent < r->len) { /* a request is a few hundred bytes: the socket buffer takes it */
        ssize_t n = write(c->fd, r->p + c->sent, r->len - c->sent);
        if (n < 0) { if (errno == EINTR || errno == EAGAIN) continue; die("write"); }
        c->sent += n;
    }
    return 1;
}

/* Bytes of a complete answer at the start of c->in, or 0 while it is incomplete; sets *ok for a 200. */
static size_t complete(Conn *c, int *ok) {
    char *end = memmem(c->in, c->have, "\r\n\r\n", 4);
    if (!end) return 0;
    size_t head = end - c->in + 4, length = (size_t)-1;
    for (char *p = c->in; p < end; p++) {
        if ((p == c->in || p[-1] == '\n') && !strncasecmp(p, "content-length:", 15)) length = strtoul(p + 15, NULL, 10);
    }
    if (length == (size_t)-1) { fprintf(stderr, "httpload: an answer without Content-Length\n"); exit(1); }
    if (c->have < head + length) return 0;
    *ok = c->have > 12 && !strncmp(c->in, "HTTP/1.1 200", 12);
    return head + length;
}

static int on_readable(Conn *c) {
    for (;;) {
        if (c->cap - c->have < 65536) c->in = realloc(c->in, c->cap = c->cap * 2 + 65536);
        ssize_t n = read(c->fd, c->in + c->have, c->cap - c->have);
        if (n < 0) { if (errno == EINTR) continue; if (errno == EAGAIN) break; die("read"); }
        if (n == 0) { fprintf(stderr, "httpload: the server closed a connection\n"); exit(1); }
        c->have += n;
        if ((size_t)n < c->cap - c->have + n) break;
    }
    int ok = 0;
    size_t used = complete(c, &ok);
    if (!used) return 1;
    answered[done] = phones[c->phone].first + c->next;
    latencies[done++] = now_ns() - c->started;
    if (!ok) {
        errors++;
        if (errors <= 3) fprintf(stderr, "httpload: %.*s\n", (int)(used < 300 ? used : 300), c->in);
    }
    bytes += used;
    memmove(c->in, c->in + used, c->have - used); c->have -= used;
    c->next++;
    return send_next(c);
}

int main(int argc, char **argv) {
    const char *file = NULL, *out = NULL;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--port")) port = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--requests")) file = argv[i + 1];
        else if (!strcmp(argv[i], "--latencies")) out = argv[i + 1];
        else if (!strcmp(argv[i], "--connections")) nconns = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--rounds")) rounds = atoi(argv[i + 1]);
        else { fprintf(stderr, "httpload: unknown option %s\n", argv[i]); return 2; }
    }
    if (!port || !file || !out || nconns < 1 || rounds < 1) {
        fprintf(stderr, "usage: httpload --port P --requests FILE --latencies OUT [--connections C] [--rounds R]\n");
        return 2;
    }
    load(file);
    total = (long)nrequests * rounds;
    latencies = malloc(sizeof(uint64_t) * total);
    answered = malloc(sizeof(int) * total);
    if ((epfd = epoll_create1(0)) < 0) die("epoll_create1");
    conns = calloc(nconns, sizeof(Conn));
    for (int i = 0; i < nconns; i++) { conns[i].phone = -1; connect_one(&conns[i]); }
    uint64_t started = now_ns();
    int active = 0;
    for (int i = 0; i < nconns; i++) active += send_next(&conns[i]);
    struct epoll_event events[64];
    while (active > 0) {
        int n = epoll_wait(epfd, events, 64, 60000);
        if (n < 0) { if (errno == EINTR) continue; die("epoll_wait"); }
        if (n == 0) { fprintf(stderr, "httpload: no answer for 60 s\n"); return 1; }
        for (int i = 0; i < n; i++) active -= !on_readable(events[i].data.ptr);
    }
    double elapsed = (now_ns() - started) / 1e9;
    FILE *f = fopen(out, "w");
    if (!f) die(out);
    for (long i = 0; i < done; i++) fprintf(f, "%d %lu\n", answered[i], (unsigned long)latencies[i]);
    fclose(f);
    struct rusage ru; getrusage(RUSAGE_SELF, &ru);
    double cpu = ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
    printf("{\"requests\":%ld,\"errors\":%ld,\"bytes\":%lu,\"elapsed_s\":%.6f,\"cpu_s\":%.6f}\n", done, errors,
           (unsigned long)bytes, elapsed, cpu);
    for (int i = 0; i < nconns; i++) close(conns[i].fd);
    return errors ? 3 : 0;
}
