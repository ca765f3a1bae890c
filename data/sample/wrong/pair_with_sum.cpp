// Deliberately wrong: may pair an element with itself (i == j) when 2 * a_i = s.
#include <iostream>
#include <vector>
using namespace std;

int main() {
    int n;
    long long s;
    cin >> n >> s;
    vector<long long> a(n);
    for (auto& x : a) cin >> x;
    for (int i = 0; i < n; i++)
        for (int j = i; j < n; j++)
            if (a[i] + a[j] == s) {
                cout << i + 1 << " " << j + 1 << "\n";
                return 0;
            }
    cout << -1 << "\n";
}
