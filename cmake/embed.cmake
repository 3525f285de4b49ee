# embed.cmake - a file's bytes as a C array in a header, so a binary carries it
# without reading it at run time (moe serve's chat page):
#   cmake -DIN=FILE -DOUT=HEADER -DNAME=SYMBOL -P embed.cmake
# defines `static const unsigned char SYMBOL[]` and `SYMBOL_len` (bytes).
file(READ "${IN}" hex HEX)
string(LENGTH "${hex}" digits)
math(EXPR bytes "${digits} / 2")
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," body "${hex}")
string(REGEX REPLACE "((0x..,){32})" "\\1\n" body "${body}")
file(WRITE "${OUT}" "/* generated from ${IN} by cmake/embed.cmake; do not edit */\n"
     "static const unsigned char ${NAME}[] = {\n${body}};\n"
     "static const unsigned long ${NAME}_len = ${bytes};\n")
