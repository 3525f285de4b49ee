#include "cli.h"
int cmd_route(int argc, char **argv) { (void)argc; (void)argv; return 0; }
