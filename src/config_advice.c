/* Warnings about configurations that are valid but unsafe. */
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include <postern/config_advice.h>

static bool
on_this_host(const struct sockaddr_storage *ss)
{
	if (ss->ss_family == AF_UNIX)
		return true;
	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *in = (const void *)ss;
		return (ntohl(in->sin_addr.s_addr) >> 24) == 127;
	}
	if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const void *)ss;
		const unsigned char *a = in6->sin6_addr.s6_addr;
		static const unsigned char v4mapped[12] = {0, 0, 0, 0, 0,    0,
		                                           0, 0, 0, 0, 0xff, 0xff};
		return IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr) ||
		       (memcmp(a, v4mapped, 12) == 0 && a[12] == 127);
	}
	return false;
}

bool
config_smtp_hides_client(const struct service *svc)
{
	bool local = on_this_host(&svc->backend.ss) ||
	             (svc->backend_host != NULL && strcmp(svc->backend_host, "localhost") == 0);

	return svc->protocol == PROTO_SMTP && svc->proxy_protocol == 0 && !svc->xclient && local;
}

void
config_advice(const struct config *cfg, void (*say)(void *arg, const char *text), void *arg)
{
	char text[512];

	for (size_t i = 0; i < cfg->nservices; i++) {
		const struct service *svc = &cfg->services[i];
		if (!config_smtp_hides_client(svc))
			continue;
		snprintf(text, sizeof(text),
		         "service %s passes SMTP to %s on this host without proxy_protocol: every "
		         "client looks local to the backend, which relays for local clients on a "
		         "stock Postfix or Exim (mynetworks): an open relay. Send a PROXY header "
		         "(Postfix: smtpd_upstream_proxy_protocol = haproxy) or set xclient = yes "
		         "(Postfix: smtpd_authorized_xclient_hosts)",
		         svc->name, svc->backend.text);
		say(arg, text);
	}
}
