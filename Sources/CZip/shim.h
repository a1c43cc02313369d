// libzip (Debian libzip-dev), found through pkg-config `libzip`: reading and writing the ZIP
// archives of Keras 3 `.keras` files. libzip checks each member's CRC-32 as it is read, bounds
// reads by the recorded compressed size, and is fuzzed continuously by OSS-Fuzz.
// zlib (zlib1g-dev, which libzip-dev depends on): the CRC-32 of the label files packed into
// exported .tflite models.
#include <zip.h>
#include <zlib.h>
