/**
 * Pure: the order the store keeps names in, and a merge of two sorted sequences. Table keys and
 * file names are stored as UTF-8 and LevelDB orders them bytewise, which is code point order; a
 * JavaScript `<` compares UTF-16 units and disagrees for characters above U+FFFF.
 */

/** Compares two strings in UTF-8 byte order (the store's order). */
export function compareUtf8(a: string, b: string): number {
  if (a === b) return 0
  const n = Math.min(a.length, b.length)
  for (let i = 0; i < n; i++) {
    const x = a.charCodeAt(i)
    const y = b.charCodeAt(i)
    if (x === y) continue
    const xs = x >= 0xd800 && x <= 0xdfff
    const ys = y >= 0xd800 && y <= 0xdfff
    // A surrogate stands for a code point above U+FFFF: greater than any other BMP character.
    if (xs !== ys) return xs ? 1 : -1
    return x - y
  }
  return a.length - b.length
}

/**
 * Walks two sequences sorted by name (compareUtf8, each name once) side by side and yields each
 * name's pair: [a, undefined] when only a has it, [undefined, b] when only b has it. Reads one item
 * ahead on each side, so two scans of any size merge in constant memory.
 */
export async function* mergeByName<A, B>(a: AsyncIterable<A> | Iterable<A>, b: AsyncIterable<B> | Iterable<B>, nameA: (x: A) => string, nameB: (x: B) => string): AsyncGenerator<[A | undefined, B | undefined]> {
  const ia = iterate(a)
  const ib = iterate(b)
  try {
    let x = await ia.next()
    let y = await ib.next()
    while (!x.done || !y.done) {
      const order = x.done ? 1 : y.done ? -1 : compareUtf8(nameA(x.value), nameB(y.value))
      if (order < 0) {
        yield [x.value as A, undefined]
        x = await ia.next()
      } else if (order > 0) {
        yield [undefined, y.value as B]
        y = await ib.next()
      } else {
        yield [x.value as A, y.value as B]
        x = await ia.next()
        y = await ib.next()
      }
    }
  } finally {
    await Promise.all([ia.return?.(), ib.return?.()])
  }
}

function iterate<T>(source: AsyncIterable<T> | Iterable<T>): AsyncIterator<T> | Iterator<T> {
  return Symbol.asyncIterator in source ? source[Symbol.asyncIterator]() : source[Symbol.iterator]()
}

/**
 * Checks that names arrive in strictly increasing order (what a merge needs); `what` names the
 * sequence for the error.
 */
export function ascending(what: (name: string, previous: string) => Error): (name: string) => void {
  let previous: string | undefined
  return (name) => {
    if (previous !== undefined && compareUtf8(previous, name) >= 0) throw what(name, previous)
    previous = name
  }
}
