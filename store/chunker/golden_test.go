package chunker

// Recorded from the first implementation; see TestGoldenBoundaries.
var goldenSizes = []int{26564, 18365, 25485, 21081, 19920, 18923, 16592, 11698, 17337, 21170, 7665}

const goldenGear0, goldenGear255 = 0x3dad370d3dde578e, 0x9cef17823c71f444
