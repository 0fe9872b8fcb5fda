/* flexgate-relay-floor: the kernel's share of a proxied request, measured.
 *
 * A byte relay with no HTTP in it: one thread, epoll, and for every client connection one
 * upstream connection of its own; whatever one side sends is passed to the other with one
 * read and one send. It makes the same system calls and TCP segments per keep-alive request as
 * an HTTP proxy with upstream keep-alive (two reads, two sends, a share of an epoll_wait), and
 * does nothing else, so its CPU per request is what no user-space proxy on this kernel can go
 * below. `make bench-floor` runs it through the side-by-side proxy benchmark; docs/PERFORMANCE.md
 * uses it to tell the agent's own cost from the kernel's.
 *
 * Not a proxy: it assumes each read fits in the peer socket's send buffer (true for the
 * benchmark's small request/response exchanges) and closes both sides on any error.
 *
 *   flexgate-relay-floor LISTEN_PORT UPSTREAM_PORT [lt]
 * listens on 127.0.0.1:LISTEN_PORT and relays to 127.0.0.1:UPSTREAM_PORT; "lt" selects
 * level-triggered epoll with read(2) (what libuv does) instead of edge-triggered with recv(2).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

enum { kMaxFd = 1 << 17 };
static int peer_of[kMaxFd];
static char buf[65536];

static struct sockaddr_in Loopback(int port) {
  struct sockaddr_in a;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_port = htons((unsigned short)port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return a;
}

static void CloseBoth(int fd) {
  int peer = peer_of[fd];
  close(fd);
  if (peer >= 0) close(peer);
}

int main(int argc, char** argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: %s LISTEN_PORT UPSTREAM_PORT [lt]\n", argv[0]);
    return 2;
  }
  const int listen_port = atoi(argv[1]), upstream_port = atoi(argv[2]);
  const int level = argc > 3 && strcmp(argv[3], "lt") == 0;
  const int one = 1;
  int ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  struct sockaddr_in la = Loopback(listen_port);
  setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (ls < 0 || bind(ls, (struct sockaddr*)&la, sizeof la) != 0 || listen(ls, 4096) != 0) {
    perror("listen");
    return 1;
  }
  int ep = epoll_create1(EPOLL_CLOEXEC);
  struct epoll_event ev = {.events = EPOLLIN, .data.fd = ls};
  epoll_ctl(ep, EPOLL_CTL_ADD, ls, &ev);
  const unsigned conn_events = EPOLLIN | (level ? 0u : (unsigned)EPOLLET);
  struct epoll_event events[512];
  for (;;) {
    int n = epoll_wait(ep, events, 512, -1);
    if (n < 0 && errno != EINTR) {
      perror("epoll_wait");
      return 1;
    }
    for (int i = 0; i < n; ++i) {
      const int fd = events[i].data.fd;
      if (fd == ls) {
        int c;
        while ((c = accept4(ls, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
          struct sockaddr_in ua = Loopback(upstream_port);
          int u = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
          /* A blocking connect keeps the relay simple; connections are set up before the
           * measured part of a run. */
          if (c >= kMaxFd || u < 0 || u >= kMaxFd ||
              connect(u, (struct sockaddr*)&ua, sizeof ua) != 0) {
            close(c);
            if (u >= 0) close(u);
            continue;
          }
          if (fcntl(u, F_SETFL, O_NONBLOCK) != 0) {
            close(c);
            close(u);
            continue;
          }
          setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
          setsockopt(u, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
          peer_of[c] = u;
          peer_of[u] = c;
          struct epoll_event ce = {.events = conn_events, .data.fd = c};
          struct epoll_event ue = {.events = conn_events, .data.fd = u};
          epoll_ctl(ep, EPOLL_CTL_ADD, c, &ce);
          epoll_ctl(ep, EPOLL_CTL_ADD, u, &ue);
        }
        continue;
      }
      /* One read per readiness event, as the agent and libuv do: a short read means the socket
       * is drained. Only a full buffer reads again (edge-triggered epoll would not report the
       * rest). */
      for (;;) {
        ssize_t r = level ? read(fd, buf, sizeof buf) : recv(fd, buf, sizeof buf, 0);
        if (r > 0) {
          if (send(peer_of[fd], buf, (size_t)r, MSG_NOSIGNAL) != r) {
            CloseBoth(fd);
            break;
          }
          if (level || (size_t)r < sizeof buf) break;
        } else {
          if (r == 0 || (errno != EAGAIN && errno != EINTR)) CloseBoth(fd);
          break;
        }
      }
    }
  }
}
