// Line-by-line port of examples/seed/producer_consumer.py: a consumer generator that receives
// values through `n = yield r` and answers each one. Its stdout is byte-identical to Python's
// (examples/seed/producer_consumer.expected; a CTest test compares them).
//
// The Python generator maps onto asyncio::Generator<Yield, Send, Return> as typing.Generator would
// type it: the consumer yields str, is sent int, returns None. Each Python line is quoted, with its
// indentation, next to or just above the C++ that ports it.
#include <asyncio/generator.hpp>

#include <iostream>
#include <optional>
#include <string>

using asyncio::Generator;

Generator<std::string, int> consumer() {  // def consumer():
    std::string r = "";                   //     r = ''
    while (true) {                        //     while True:
        // n is std::nullopt when the consumer is resumed by next(), which is Python's send(None).
        std::optional<int> n = co_yield r;  //         n = yield r
        if (!n || *n == 0) {                //         if not n:
            co_return;                      //             return
        }
        //         print('[CONSUMER] Consuming %s...' % n)
        std::cout << "[CONSUMER] Consuming " << *n << "...\n";
        r = "200 OK";  //         r = '200 OK'
    }
}

void produce(Generator<std::string, int>& c) {  // def produce(c):
    c.next();                                   //     c.send(None)
    int n = 0;                                  //     n = 0
    while (n < 5) {                             //     while n < 5:
        n = n + 1;                              //         n = n + 1
        //         print('[PRODUCER] Producing %s...' % n)
        std::cout << "[PRODUCER] Producing " << n << "...\n";
        std::string r = c.send(n);  //         r = c.send(n)
        //         print('[PRODUCER] Consumer return: %s' % r)
        std::cout << "[PRODUCER] Consumer return: " << r << "\n";
    }
    c.close();  //     c.close()
}

int main() {
    Generator<std::string, int> c = consumer();  // c = consumer()
    produce(c);                                  // produce(c)
}
