"""`assemblenet flow`: TV-L1 optical flow of one image pair, written as an (H, W, 2) float32 .npy."""


def register(subparsers):
    parser = subparsers.add_parser("flow", help="TV-L1 flow of one image pair to an .npy")
    parser.add_argument("--method", choices=("tensor", "opencv"), default="opencv",
                        help="tensor: preprocessing.tvl1 in keras.ops; opencv: cv2.optflow DualTVL1 (the reference)")
    parser.add_argument("--first", required=True, help="first image (any format OpenCV reads)")
    parser.add_argument("--second", required=True, help="second image, same size")
    parser.add_argument("--out", required=True,
                        help="output .npy: (H, W, 2) float32, second(x + flow) ≈ first(x)")
    parser.set_defaults(func=run)


def run(args):
    from preprocessing.flow import flow_image_pair

    flow = flow_image_pair(args.first, args.second, args.out, args.method)
    print(f"wrote {args.out}: flow {flow.shape}, mean |flow| {float(abs(flow).mean()):.3f} px")
    return 0
