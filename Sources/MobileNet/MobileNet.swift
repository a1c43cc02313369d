// The umbrella module: `import MobileNet` gives the tensors and kernels, the MobileNetV2 model
// and the file and image input/output.
@_exported import MobileNetIO
@_exported import MobileNetKernels
@_exported import MobileNetModel
@_exported import MobileNetOneDNN
@_exported import MobileNetSearch
@_exported import MobileNetStore
@_exported import MobileNetTransfer
