// Checker for any_divisor (testlib argument order): checker <input> <program output> <expected answer>.
// Exit 0 accepts, 1 rejects (wrong answer), 3 means the expected answer itself is inconsistent.
#include <cstdlib>
#include <fstream>
#include <string>
using namespace std;

// The next token of f as an integer; false when there is none or it is not a whole integer.
static bool next_int(ifstream& f, long long& value) {
    string token;
    if (!(f >> token)) return false;
    char* end = nullptr;
    value = strtoll(token.c_str(), &end, 10);
    return !token.empty() && *end == '\0';
}

int main(int argc, char** argv) {
    if (argc != 4) return 3;
    ifstream input(argv[1]), output(argv[2]), answer(argv[3]);
    long long n, expected, d, extra;
    input >> n;
    if (!next_int(answer, expected)) return 3;
    if (!next_int(output, d) || next_int(output, extra)) return 1;
    if (d == -1) return expected == -1 ? 0 : 1;  // "prime" is right only when the reference found no divisor
    if (!(1 < d && d < n) || n % d != 0) return 1;
    return expected == -1 ? 3 : 0;  // a divisor where the reference saw none: the reference is wrong
}
