// Checker for pair_with_sum (testlib argument order): checker <input> <program output> <expected answer>.
// Exit 0 accepts, 1 rejects (wrong answer), 3 means the expected answer itself is inconsistent.
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>
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
    long long n, s;
    input >> n >> s;
    vector<long long> a(n);
    for (auto& x : a) input >> x;
    long long expected_first;
    if (!next_int(answer, expected_first)) return 3;
    long long i, j, extra;
    if (!next_int(output, i)) return 1;
    if (i == -1) {  // "no pair" is right only when the reference found none
        return (expected_first == -1 && !next_int(output, extra)) ? 0 : 1;
    }
    if (!next_int(output, j) || next_int(output, extra)) return 1;
    if (!(1 <= i && i < j && j <= n) || a[i - 1] + a[j - 1] != s) return 1;
    return expected_first == -1 ? 3 : 0;  // a valid pair where the reference saw none: the reference is wrong
}
