/* The floor of a proxy's added latency on this machine: a UDP relay that forwards every
 * datagram from anyone to TARGET, and every datagram from TARGET back to whoever sent
 * last, unread and unchanged. ci/bench-lb.sh probes through it beside the balancers,
 * under the same load: what it adds is what any user-space hop costs here.
 *
 *   null_relay LISTEN_PORT TARGET_PORT   (both on 127.0.0.1)
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: null_relay LISTEN_PORT TARGET_PORT\n");
    return 2;
  }
  int fd = socket(AF_INET, SOCK_DGRAM, 0);
  struct sockaddr_in me = {0}, target = {0}, client = {0}, from;
  me.sin_family = target.sin_family = AF_INET;
  me.sin_addr.s_addr = target.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  me.sin_port = htons(atoi(argv[1]));
  target.sin_port = htons(atoi(argv[2]));
  if (fd < 0 || bind(fd, (struct sockaddr *)&me, sizeof me) != 0) {
    perror("bind");
    return 1;
  }
  static char buf[65536];
  for (;;) {
    socklen_t len = sizeof from;
    ssize_t n = recvfrom(fd, buf, sizeof buf, 0, (struct sockaddr *)&from, &len);
    if (n < 0)
      continue;
    if (from.sin_port == target.sin_port && from.sin_addr.s_addr == target.sin_addr.s_addr) {
      if (client.sin_port != 0)
        sendto(fd, buf, n, 0, (struct sockaddr *)&client, sizeof client);
    } else {
      client = from;
      sendto(fd, buf, n, 0, (struct sockaddr *)&target, sizeof target);
    }
  }
}
