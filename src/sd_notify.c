/* sd_notify(3), the part postern needs: a datagram to $NOTIFY_SOCKET, a
 * file system path or (leading '@') an abstract socket name. */
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <postern/sd_notify.h>

bool
sd_notify_wanted(void)
{
	const char *path = getenv("NOTIFY_SOCKET");

	return path && (path[0] == '/' || path[0] == '@');
}

static int
send_state(const char *text, size_t len)
{
	const char *path = getenv("NOTIFY_SOCKET");
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	size_t plen;
	ssize_t w;
	int fd;

	if (!sd_notify_wanted())
		return 0;
	plen = strlen(path);
	if (plen >= sizeof(sa.sun_path))
		return -1;
	memcpy(sa.sun_path, path, plen);
	if (sa.sun_path[0] == '@')
		sa.sun_path[0] = '\0'; /* abstract: the name is not 0-terminated */
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	/* MSG_DONTWAIT: a stalled manager must not stop the event loop. */
	w = sendto(fd, text, len, MSG_DONTWAIT | MSG_NOSIGNAL, (struct sockaddr *)&sa,
	           (socklen_t)(offsetof(struct sockaddr_un, sun_path) + plen));
	close(fd);
	return w == (ssize_t)len ? 0 : -1;
}

int
sd_notifyf(const char *fmt, ...)
{
	char text[1024];
	va_list ap;
	int n;

	if (!sd_notify_wanted())
		return 0;
	va_start(ap, fmt);
	n = vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	if (n < 0)
		return -1;
	return send_state(text, (size_t)n < sizeof(text) ? (size_t)n : sizeof(text) - 1);
}

int
sd_notify_status(const char *state, const char *fmt, ...)
{
	char text[1024];
	size_t n = 0, at;
	va_list ap;
	int r;

	if (!sd_notify_wanted())
		return 0;
	if (state)
		n = (size_t)snprintf(text, sizeof(text), "%s\n", state);
	if (n >= sizeof(text))
		return -1;
	n += (size_t)snprintf(text + n, sizeof(text) - n, "STATUS=");
	at = n;
	va_start(ap, fmt);
	r = vsnprintf(text + n, sizeof(text) - n, fmt, ap);
	va_end(ap);
	if (r < 0)
		return -1;
	n += (size_t)r < sizeof(text) - n ? (size_t)r : sizeof(text) - n - 1;
	/* A newline in the text (a file name, a peer's words) would start a
	 * line of its own, such as READY=1. */
	for (size_t i = at; i < n; i++)
		if ((unsigned char)text[i] < 0x20 || text[i] == 0x7f)
			text[i] = '?';
	return send_state(text, n);
}

void
sd_notify_reloading(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	sd_notifyf("RELOADING=1\nMONOTONIC_USEC=%llu",
	           (unsigned long long)ts.tv_sec * 1000000ULL +
	                   (unsigned long long)ts.tv_nsec / 1000ULL);
}

void
sd_notify_forget(void)
{
	unsetenv("NOTIFY_SOCKET");
}
