// Deliberately wrong: stops before sqrt(n), so squares of primes (49, 961) are called prime.
#include <iostream>
using namespace std;

int main() {
    long long n;
    cin >> n;
    for (long long d = 2; d * d < n; d++)
        if (n % d == 0) {
            cout << d << "\n";
            return 0;
        }
    cout << -1 << "\n";
}
