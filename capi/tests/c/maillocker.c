/*
 * maillocker NAME: maillock(NAME, 0), print its return code, exit 0.
 * Installed setgid mail by the tests, to show which lock a privileged
 * program takes when its caller sets $MAIL.
 */
#include <maillock.h>
#include <stdio.h>

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: maillocker NAME\n");
		return 2;
	}
	printf("maillock %d\n", maillock(argv[1], 0));
	return 0;
}
