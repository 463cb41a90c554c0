// Map-server load generator in C for test/bench/mapload (--generator c): the same loads as mapload.mjs, from one
// thread with epoll, so that the generator takes a small share of the 2 cores it shares with the server (the Node
// generator costs about 50 µs of CPU a map, half a core at 10,000 maps/s). Prints the same JSON line.
// Usage: mapload-c HOST PORT KEYFILE NODE VOLUME SECONDS CONNS PATH...
// Environment as mapload.mjs: MAPLOAD_RATE (maps/s, all connections; 0 or unset: a closed loop), MAPLOAD_WARMUP
// (seconds, default 1), MAPLOAD_TRACE (a file: each measured request slower than 20 ms). Each connection authenticates (HELLO, AUTH: HMAC-SHA256 with the node key), then maps its
// paths in turn (MAP VOLUME PATH read), each RELEASE sent with the next MAP in one write; latency is that of MAP,
// from the request's scheduled time in an open loop (as mapload.mjs: no coordinated omission) or its send.
// Build: cc -O2 -o mapload-c mapload.c -lcrypto
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static void die(const char *what) {
  fprintf(stderr, "mapload-c: %s: %s\n", what, errno ? strerror(errno) : "failed");
  exit(1);
}

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

typedef struct {
  int fd;
  char buf[1 << 16];
  size_t len;  // bytes in buf
  // The request in flight: scheduled time (latency counts from it), whether its RELEASE reply is still due.
  int busy;
  int release_due;
  int head_seen;  // the OK MAP line came; X lines until END
  long extents_said, extents_seen;
  double t0;
  double due;  // open loop: when the next request is due
  char lease[64];
  long k;  // next path index
  long maps, all, errors;
} Conn;

static const char *volume;
static char **paths;
static int npaths;
static double *lat;
static size_t nlat, caplat;

/** One line from c->buf (without its newline), or NULL when none is complete; *rest gets the offset after it. */
static char *take_line(Conn *c, size_t *from) {
  char *nl = memchr(c->buf + *from, '\n', c->len - *from);
  if (!nl) return NULL;
  *nl = 0;
  char *line = c->buf + *from;
  *from = (size_t)(nl - c->buf) + 1;
  return line;
}

static void fill(Conn *c) {
  if (c->len == sizeof c->buf) {
    fprintf(stderr, "mapload-c: a line longer than %zu bytes\n", sizeof c->buf);
    exit(1);
  }
  ssize_t n = read(c->fd, c->buf + c->len, sizeof c->buf - c->len);
  if (n == 0) {
    fprintf(stderr, "mapload-c: the server closed a connection\n");
    exit(1);
  }
  if (n < 0) {
    if (errno == EAGAIN || errno == EINTR) return;
    die("read");
  }
  c->len += (size_t)n;
}

/** Blocking read of one reply line during the handshake (pushes skipped). */
static void read_line_blocking(Conn *c, char *out, size_t cap) {
  for (;;) {
    size_t from = 0;
    char *l = take_line(c, &from);
    if (l) {
      int push = strncmp(l, "! ", 2) == 0;
      if (!push) {
        size_t n = strlen(l) < cap - 1 ? strlen(l) : cap - 1;
        memcpy(out, l, n);
        out[n] = 0;
      }
      memmove(c->buf, c->buf + from, c->len - from);
      c->len -= from;
      if (!push) return;
      continue;
    }
    fill(c);
  }
}

static void send_all(int fd, const char *s, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, s, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) {
        usleep(100);
        continue;
      }
      die("write");
    }
    s += w;
    n -= (size_t)w;
  }
}

static const char *field(const char *line, const char *name, char *out, size_t cap) {
  size_t nl = strlen(name);
  for (const char *p = line; (p = strstr(p, name)) != NULL; p++) {
    if ((p == line || p[-1] == ' ') && p[nl] == '=') {
      const char *v = p + nl + 1;
      size_t n = strcspn(v, " ");
      if (n >= cap) n = cap - 1;
      memcpy(out, v, n);
      out[n] = 0;
      return out;
    }
  }
  return NULL;
}

static void hexify(const unsigned char *b, size_t n, char *out) {
  for (size_t i = 0; i < n; i++) sprintf(out + 2 * i, "%02x", b[i]);
}

static void authenticate(Conn *c, const char *host, const char *port, const char *key, const char *node) {
  struct addrinfo hints = {0}, *ai;
  hints.ai_socktype = SOCK_STREAM;
  if (getaddrinfo(host, port, &hints, &ai) != 0) die("getaddrinfo");
  c->fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (c->fd < 0) die("socket");
  if (connect(c->fd, ai->ai_addr, ai->ai_addrlen) < 0) die("connect");
  freeaddrinfo(ai);
  int one = 1;
  setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  char line[4096], challenge[256], msg[1024], out[1024];
  read_line_blocking(c, line, sizeof line);
  if (!field(line, "challenge", challenge, sizeof challenge)) {
    fprintf(stderr, "mapload-c: greeting without a challenge: %s\n", line);
    exit(1);
  }
  unsigned char r[32];
  char mine[65];
  if (RAND_bytes(r, sizeof r) != 1) die("RAND_bytes");
  hexify(r, sizeof r, mine);
  snprintf(out, sizeof out, "HELLO %s 2 %s\n", node, mine);
  send_all(c->fd, out, strlen(out));
  read_line_blocking(c, line, sizeof line);
  if (strncmp(line, "OK HELLO", 8) != 0) {
    fprintf(stderr, "mapload-c: %s\n", line);
    exit(1);
  }
  snprintf(msg, sizeof msg, "fused-auth-v2\n%s\n%s\n%s", challenge, mine, node);
  unsigned char mac[32];
  unsigned int maclen = 0;
  HMAC(EVP_sha256(), key, (int)strlen(key), (const unsigned char *)msg, strlen(msg), mac, &maclen);
  char hex[65];
  hexify(mac, 32, hex);
  snprintf(out, sizeof out, "AUTH %s\n", hex);
  send_all(c->fd, out, strlen(out));
  read_line_blocking(c, line, sizeof line);
  if (strncmp(line, "OK AUTH", 7) != 0) {
    fprintf(stderr, "mapload-c: %s\n", line);
    exit(1);
  }
}

/** Send the connection's next MAP (with the RELEASE of its last lease, in one write). */
static void send_next(Conn *c, double t0) {
  char out[8192];
  int n = 0;
  if (c->lease[0]) {
    n = snprintf(out, sizeof out, "RELEASE %s\n", c->lease);
    c->lease[0] = 0;
    c->release_due = 1;
  }
  n += snprintf(out + n, sizeof out - (size_t)n, "MAP %s %s read\n", volume, paths[c->k++ % npaths]);
  send_all(c->fd, out, (size_t)n);
  c->busy = 1;
  c->head_seen = 0;
  c->extents_seen = 0;
  c->t0 = t0;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
  if (argc < 9) {
    fprintf(stderr, "usage: mapload-c HOST PORT KEYFILE NODE VOLUME SECONDS CONNS PATH...\n");
    return 2;
  }
  const char *host = argv[1], *port = argv[2], *keyfile = argv[3], *node = argv[4];
  volume = argv[5];
  double seconds = atof(argv[6]);
  int conns = atoi(argv[7]);
  paths = argv + 8;
  npaths = argc - 8;
  const char *r = getenv("MAPLOAD_RATE"), *w = getenv("MAPLOAD_WARMUP");
  double rate = r ? atof(r) : 0, warmup = w ? atof(w) : 1;
  if (seconds <= 0 || conns <= 0 || rate < 0 || warmup < 0) {
    fprintf(stderr, "mapload-c: SECONDS and CONNS must be positive, MAPLOAD_RATE and MAPLOAD_WARMUP not negative\n");
    return 2;
  }
  // MAPLOAD_TRACE=FILE: each measured request slower than 20 ms, as "scheduled-ms latency-ms connection" lines.
  const char *tracefile = getenv("MAPLOAD_TRACE");
  FILE *trace = tracefile && *tracefile ? fopen(tracefile, "w") : NULL;
  if (tracefile && *tracefile && !trace) die(tracefile);
  char key[512];
  FILE *kf = fopen(keyfile, "r");
  if (!kf || !fgets(key, sizeof key, kf)) die(keyfile);
  fclose(kf);
  key[strcspn(key, "\r\n")] = 0;

  struct rusage ru0;
  getrusage(RUSAGE_SELF, &ru0);
  Conn *cs = calloc((size_t)conns, sizeof *cs);
  if (!cs) die("calloc");
  // One after the other: the server admits only a few unauthenticated connections at once.
  for (int i = 0; i < conns; i++) {
    authenticate(&cs[i], host, port, key, node);
    cs[i].k = i;
  }
  int ep = epoll_create1(EPOLL_CLOEXEC);
  if (ep < 0) die("epoll_create1");
  for (int i = 0; i < conns; i++) {
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, cs[i].fd, &ev) < 0) die("epoll_ctl");
  }
  double interval = rate > 0 ? conns * 1000.0 / rate : 0;  // one connection's gap between requests (ms)
  double start = now_ms() + warmup * 1000, deadline = start + seconds * 1000;
  double first = start - warmup * 1000;
  for (int i = 0; i < conns; i++) {
    cs[i].due = first + interval * i / conns;
    if (interval == 0) send_next(&cs[i], now_ms());
  }
  caplat = 1 << 16;
  lat = malloc(caplat * sizeof *lat);
  long extents_per_map = 0;
  struct epoll_event evs[128];
  for (;;) {
    double t = now_ms();
    int active = 0;
    double next_due = 1e300;
    for (int i = 0; i < conns; i++) {
      Conn *c = &cs[i];
      if (c->busy) {
        active = 1;
        continue;
      }
      if (interval > 0) {
        if (c->due >= deadline) continue;
        if (c->due <= t) {
          double due = c->due;
          c->due += interval;
          send_next(c, due);
          active = 1;
        } else {
          active = 1;
          if (c->due < next_due) next_due = c->due;
        }
      } else if (t < deadline) {
        send_next(c, t);
        active = 1;
      }
    }
    if (!active) break;
    // Sleep until the next request is due (to the microsecond: a request sent late counts that against the server).
    struct timespec ts, *timeout = NULL;
    if (next_due < 1e300) {
      double wait = next_due - now_ms();
      if (wait < 0) wait = 0;
      ts.tv_sec = (time_t)(wait / 1000);
      ts.tv_nsec = (long)((wait - ts.tv_sec * 1000.0) * 1e6);
      timeout = &ts;
    }
    int n = epoll_pwait2(ep, evs, 128, timeout, NULL);
    if (n < 0) {
      if (errno == EINTR) continue;
      die("epoll_wait");
    }
    for (int e = 0; e < n; e++) {
      Conn *c = &cs[evs[e].data.u32];
      fill(c);
      size_t from = 0;
      char *l;
      while (c->busy && (l = take_line(c, &from)) != NULL) {
        if (strncmp(l, "! ", 2) == 0) continue;  // a push (a recall) is not a reply
        if (c->release_due) {
          if (strncmp(l, "OK RELEASE", 10) != 0) {
            fprintf(stderr, "mapload-c: RELEASE: %s\n", l);
            exit(1);
          }
          c->release_due = 0;
          continue;
        }
        if (!c->head_seen) {
          if (strncmp(l, "OK MAP", 6) != 0) {
            c->errors++;
            if (c->errors > 10) {
              fprintf(stderr, "mapload-c: %s\n", l);
              exit(1);
            }
            c->busy = 0;
            continue;
          }
          char v[128];
          if (field(l, "network", v, sizeof v)) {
            fprintf(stderr, "mapload-c: NETWORK map: %s\n", l);
            exit(1);
          }
          if (!field(l, "lease", c->lease, sizeof c->lease) || !field(l, "extents", v, sizeof v)) {
            fprintf(stderr, "mapload-c: a map head without lease or extents: %s\n", l);
            exit(1);
          }
          c->extents_said = atol(v);
          c->head_seen = 1;
          continue;
        }
        if (strcmp(l, "END") != 0) {
          c->extents_seen++;
          continue;
        }
        if (c->extents_seen != c->extents_said) {
          fprintf(stderr, "mapload-c: extents=%ld but %ld X lines\n", c->extents_said, c->extents_seen);
          exit(1);
        }
        double done = now_ms();
        extents_per_map = c->extents_seen;
        c->busy = 0;
        c->all++;
        if (c->t0 >= start) {
          if (nlat == caplat) {
            caplat *= 2;
            lat = realloc(lat, caplat * sizeof *lat);
            if (!lat) die("realloc");
          }
          lat[nlat++] = done - c->t0;
          c->maps++;
          if (trace && done - c->t0 >= 20) fprintf(trace, "%.1f %.1f %d\n", c->t0 - start, done - c->t0, (int)(c - cs));
        }
      }
      memmove(c->buf, c->buf + from, c->len - from);
      c->len -= from;
    }
  }
  double elapsed = (now_ms() - start) / 1000;
  // The last leases, then QUIT.
  for (int i = 0; i < conns; i++) {
    Conn *c = &cs[i];
    char out[128], line[4096];
    if (c->lease[0]) {
      snprintf(out, sizeof out, "RELEASE %s\n", c->lease);
      send_all(c->fd, out, strlen(out));
      read_line_blocking(c, line, sizeof line);
    }
    send_all(c->fd, "QUIT\n", 5);
  }
  struct rusage ru1;
  getrusage(RUSAGE_SELF, &ru1);
  double cpu_us = (ru1.ru_utime.tv_sec - ru0.ru_utime.tv_sec + ru1.ru_stime.tv_sec - ru0.ru_stime.tv_sec) * 1e6 +
                  (ru1.ru_utime.tv_usec - ru0.ru_utime.tv_usec + ru1.ru_stime.tv_usec - ru0.ru_stime.tv_usec);
  long maps = 0, all = 0, errors = 0;
  for (int i = 0; i < conns; i++) {
    maps += cs[i].maps;
    all += cs[i].all;
    errors += cs[i].errors;
  }
  qsort(lat, nlat, sizeof *lat, cmp_double);
#define PCT(p) (nlat ? lat[(size_t)((p) / 100.0 * nlat) < nlat ? (size_t)((p) / 100.0 * nlat) : nlat - 1] : 0)
  printf("{\"conns\":%d,\"seconds\":%.2f,\"maps\":%ld,\"mapsWithWarmup\":%ld,\"warmupSeconds\":%g,\"mapsPerSecond\":%ld,"
         "\"extentsPerMap\":%ld,\"p50ms\":%.2f,\"p99ms\":%.2f,\"maxms\":%.2f,\"errors\":%ld,\"pipelined\":true,"
         "\"loadCpuUsPerMap\":%ld,\"generator\":\"c\"",
         conns, elapsed, maps, all, warmup, (long)(maps / elapsed + 0.5), extents_per_map, PCT(50), PCT(99),
         nlat ? lat[nlat - 1] : 0, errors, all > 0 ? (long)(cpu_us / all + 0.5) : 0);
  if (trace) fclose(trace);
  if (rate > 0) printf(",\"offeredPerSecond\":%g", rate);
  printf("}\n");
  return 0;
}
