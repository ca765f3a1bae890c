#include <iostream>
#include <map>
using namespace std;

int main() {
    int n;
    long long s;
    cin >> n >> s;
    map<long long, int> first_index;  // value -> smallest index seen so far
    for (int j = 1; j <= n; j++) {
        long long x;
        cin >> x;
        auto it = first_index.find(s - x);
        if (it != first_index.end()) {
            cout << it->second << " " << j << "\n";
            return 0;
        }
        first_index.emplace(x, j);
    }
    cout << -1 << "\n";
}
