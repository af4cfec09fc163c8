/* Socket addresses and CIDR blocks: parsed once (at configuration load),
 * then used as binary. */
#ifndef POSTERN_NETADDR_H
#define POSTERN_NETADDR_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

/* A socket address parsed from "HOST:PORT", "[V6]:PORT" or "unix:/path". */
struct sockaddr_ex {
	struct sockaddr_storage ss;
	socklen_t len;
	char text[128]; /* as written, for logs: "127.0.0.1:993" */
	int line;       /* where it was written, for messages */
	/* With NETADDR_DEFER_NAMES, a host name is kept unresolved: ss_family
	 * is AF_UNSPEC and the port (network order) is here. */
	unsigned short name_port;
};

/* Parses S into OUT with restrictions (NETADDR_*) and a reason in ERR on
 * failure: "HOST:PORT", "[V6]:PORT", "*:PORT" (any IPv4) or "unix:/path".
 * "localhost" is always 127.0.0.1; other host names are resolved with
 * getaddrinfo (IPv4 preferred) unless NETADDR_NUMERIC. HOST_OUT (may be
 * NULL) gets a malloc'ed copy of the host part (NULL for unix:). Returns 0
 * or -1. netaddr_parse_sockaddr: the same with no restrictions and no
 * reason. */
#define NETADDR_NO_UNIX 0x1     /* reject unix:/path */
#define NETADDR_NO_WILDCARD 0x2 /* reject *:PORT */
#define NETADDR_NUMERIC 0x4     /* IP literals, "*" and localhost only */
#define NETADDR_DEFER_NAMES 0x8 /* a host name is checked, not resolved */
int netaddr_parse(const char *s, int flags, struct sockaddr_ex *out, char **host_out, char *err,
                  size_t errlen);
int netaddr_parse_sockaddr(const char *s, struct sockaddr_ex *out, char **host_out);

/* 1 if binding A and B would clash: the same address, 2 if one is the
 * wildcard of the other's family on the same port, else 0. */
int netaddr_clash(const struct sockaddr_ex *a, const struct sockaddr_ex *b);

/* An IPv4 or IPv6 block: the first LEN bits of NET. */
struct netaddr_cidr {
	int family; /* AF_INET or AF_INET6 */
	unsigned char net[16];
	int len;
};

struct netaddr_cidrs {
	struct netaddr_cidr *v;
	size_t n;
};

/* "ADDR" or "ADDR/LEN", numeric only, into OUT (may be NULL: a syntax
 * check). Returns 0, or -1 on a bad value. */
int netaddr_parse_cidr(const char *s, struct netaddr_cidr *out);
int netaddr_cidrs_add(struct netaddr_cidrs *l, const struct netaddr_cidr *c);
void netaddr_cidrs_free(struct netaddr_cidrs *l);

/* Whether SA lies in one of the blocks of L (an IPv4-mapped IPv6 address
 * matches IPv6 blocks only). */
bool netaddr_cidr_match(const struct netaddr_cidrs *l, const struct sockaddr *sa);

#endif
