/* The device's main loop, the same on every target: bring up the port, serve the protocol
 * until the link is gone. */
#include "tc_port.h"
#include "tc_protocol.h"

/* For ports that take options (the host port's --tcp); ARM ports never read them. */
int tc_main_argc;
char **tc_main_argv;

int main(int argc, char **argv)
{
    tc_main_argc = argc;
    tc_main_argv = argv;
    tc_port_init();
    tc_protocol_init();
    tc_protocol_serve();
    return 0;
}
