#include <stdio.h>

int main(void) {
    puts("Hello from a package kiln built.");
    return 0;
}
